"""kwok stages for local mode: kwok places pods and hands out their IPs; we run them.

Unlike the test cluster's stages (where kwok fakes everything), kwok here only gives a
scheduled pod its IP and the PodScheduled condition. The local runtime then runs the
containers and owns everything else in the status, and deletes the pod itself once its
processes have drained and its namespace is gone, as a kubelet does.
"""

from __future__ import annotations

from typing import Final

from gossamer_kube.testing.stages import KWOK_STAGES_YAML

_POD_PLACED: Final = """\
---
apiVersion: kwok.x-k8s.io/v1alpha1
kind: Stage
metadata:
  name: gossamer-local-pod-placed
spec:
  resourceRef:
    apiGroup: v1
    kind: Pod
  selector:
    matchExpressions:
    - key: .metadata.deletionTimestamp
      operator: DoesNotExist
    - key: .status.podIP
      operator: DoesNotExist
  next:
    statusTemplate: |
      {{ $now := Now }}
      phase: Pending
      startTime: {{ $now | Quote }}
      hostIP: {{ NodeIPWith .spec.nodeName | Quote }}
      podIP: {{ PodIPWith .spec.nodeName ( or .spec.hostNetwork false ) ( or .metadata.uid "" ) \
( or .metadata.name "" ) ( or .metadata.namespace "" ) | Quote }}
      conditions:
      - type: PodScheduled
        status: "True"
        lastTransitionTime: {{ $now | Quote }}
"""


def local_mode_stages() -> str:
    """The node stages of the test cluster, with the pod stages replaced by ours."""
    documents = KWOK_STAGES_YAML.split("\n---\n")
    kept = [d for d in documents if "kind: Pod\n" not in d]
    return "\n---\n".join(kept) + "\n" + _POD_PLACED
