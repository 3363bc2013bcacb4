"""The ``training_pipes_client`` resource on Kubernetes, for adapters launched as adapter-training.yaml says.

Copy this file into the dg project's defs folder (beside ``baize/defs.yaml``), with
``dagster-k8s`` installed in the code location's image: Dagster merges its definitions with
the pipeline's, and an adapter whose ``training.launcher.resource`` is
``training_pipes_client`` trains in a pod through it.
"""

import dagster as dg
from dagster_k8s import PipesK8sClient


@dg.definitions
def training_pipes_client() -> dg.Definitions:
    # Inside the cluster the client uses the pod's service account, outside it the kubeconfig.
    return dg.Definitions(resources={"training_pipes_client": PipesK8sClient()})
