{{/*
Shared pieces of the gossamer-viz chart. `gossamer viz install` renders the same objects in
Python (cli/src/gossamer_cli/viz/manifests.py); tests/integration/test_chart_render.py holds
the two renderers together, so a change here needs the same change there.
*/}}

{{/* Labels of one component: (dict "component" "web") */}}
{{- define "viz.labels" -}}
linkerd.io/extension: viz
component: {{ .component }}
app.kubernetes.io/name: {{ .component }}
app.kubernetes.io/part-of: gossamer-viz
{{- end -}}

{{- define "viz.clusterName" -}}
{{- printf "%s-%s-%s" .root.Values.linkerdNamespace .root.Values.namespace .component -}}
{{- end -}}

{{/* Python's re.escape for a DNS name: dots and dashes escaped. */}}
{{- define "viz.escapeName" -}}
{{- . | replace "." "\\." | replace "-" "\\-" -}}
{{- end -}}

{{- define "viz.securityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
runAsUser: 65534
runAsGroup: 65534
capabilities:
  drop:
  - ALL
seccompProfile:
  type: RuntimeDefault
{{- end -}}
