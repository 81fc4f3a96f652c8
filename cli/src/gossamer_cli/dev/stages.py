"""kwok stages for local mode: kwok keeps the node alive; the pods are ours entirely.

Unlike the test cluster's stages (where kwok fakes every pod), kwok here plays no pod stage
at all. The local runtime gives a scheduled pod its IP (see :mod:`.addresses`), runs its
containers, reports all of its status (``podIP``, ``hostIP``, ``startTime``, conditions) and
deletes it once its processes have drained and its namespace is gone, as a kubelet does.

kwok used to hand out the pod's IP, from a stage selecting pods without ``status.podIP``. A
stage plays once per watch event that matches, and a pod's second event could arrive before
kwok's own patch had landed (a busy machine widens that window): the stage then played again
and gave the running pod a second address, while its namespace kept the first one.
"""

from __future__ import annotations

from typing import Final

from gossamer_kube.testing.stages import KWOK_STAGES_YAML

#: Given no pod stage at all, kwok falls back to its default ones (which run every pod and
#: give it an IP), so local mode names one that matches no pod: every pod has a uid.
_NO_POD_EVER: Final = """\
---
apiVersion: kwok.x-k8s.io/v1alpha1
kind: Stage
metadata:
  name: gossamer-local-pods-are-the-runtimes
spec:
  resourceRef:
    apiGroup: v1
    kind: Pod
  selector:
    matchExpressions:
    - key: .metadata.uid
      operator: DoesNotExist
  next: {}
"""


def local_mode_stages() -> str:
    """The node stages of the test cluster, and a pod stage that never plays."""
    documents = KWOK_STAGES_YAML.split("\n---\n")
    kept = [d for d in documents if "kind: Pod\n" not in d]
    return "\n---\n".join(kept) + "\n" + _NO_POD_EVER
