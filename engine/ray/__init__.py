"""Scale-out on a Ray cluster: deployments as Ray Serve applications, batch inference on Ray Data.

Imported only when asked for (``import engine`` never imports Ray); needs ``pip install 'engine[ray]'``.

* :func:`deploy` → :class:`RayDeployment`, the interface of ``engine.deployment.Deployment`` with one
  Serve replica per Elasticsearch allocation (:mod:`engine.ray.options` has the mapping);
* :func:`infer_dataset`: a lazy Ray Dataset with every row's result, one ONNX Runtime session per actor.
"""

from __future__ import annotations

from .dataset import infer_dataset
from .deployment import RayDeployment, connect, deploy
from .options import plan

__all__ = ["RayDeployment", "connect", "deploy", "infer_dataset", "plan"]
