{{/*
Shared pieces of the Gossamer control-plane chart. `gossamer install` renders the same objects
in Python (cli/src/gossamer_cli/manifests*.py); tests/integration/test_chart_render.py holds the
two renderers together, so a change here needs the same change there.
*/}}

{{- define "gossamer.tag" -}}
{{- .Values.image.tag | default .Chart.AppVersion -}}
{{- end -}}

{{- define "gossamer.registry" -}}
{{- .Values.image.registry | trimSuffix "/" -}}
{{- end -}}

{{/* An image reference: (dict "root" $ "key" "proxyInit" "name" "proxy-init") */}}
{{- define "gossamer.imageRepo" -}}
{{- (get .root.Values.image .key).repository | default (printf "%s/%s" (include "gossamer.registry" .root) .name) -}}
{{- end -}}
{{- define "gossamer.imageTag" -}}
{{- (get .root.Values.image .key).tag | default (include "gossamer.tag" .root) -}}
{{- end -}}
{{- define "gossamer.image" -}}
{{- printf "%s:%s" (include "gossamer.imageRepo" .) (include "gossamer.imageTag" .) -}}
{{- end -}}

{{- define "gossamer.trustDomain" -}}
{{- .Values.identityTrustDomain | default .Values.clusterDomain -}}
{{- end -}}

{{- define "gossamer.commonLabels" -}}
linkerd.io/control-plane-ns: {{ .Release.Namespace | quote }}
app.kubernetes.io/part-of: gossamer
app.kubernetes.io/version: {{ include "gossamer.tag" . | quote }}
{{- end -}}

{{/* (dict "root" $ "component" "identity") */}}
{{- define "gossamer.componentLabels" -}}
{{ include "gossamer.commonLabels" .root }}
linkerd.io/control-plane-component: {{ .component | quote }}
app.kubernetes.io/name: {{ printf "gossamer-%s" .component | quote }}
{{- end -}}

{{- define "gossamer.selectorLabels" -}}
linkerd.io/control-plane-component: {{ .component | quote }}
linkerd.io/control-plane-ns: {{ .root.Release.Namespace | quote }}
{{- end -}}

{{/* A resources block from {cpu: {request, limit}, memory: {request, limit}}; empty if none. */}}
{{- define "gossamer.resources" -}}
{{- $limits := dict -}}
{{- $requests := dict -}}
{{- if .cpu.limit }}{{ $_ := set $limits "cpu" (toString .cpu.limit) }}{{ end -}}
{{- if .memory.limit }}{{ $_ := set $limits "memory" (toString .memory.limit) }}{{ end -}}
{{- if .cpu.request }}{{ $_ := set $requests "cpu" (toString .cpu.request) }}{{ end -}}
{{- if .memory.request }}{{ $_ := set $requests "memory" (toString .memory.request) }}{{ end -}}
{{- $out := dict -}}
{{- if $limits }}{{ $_ := set $out "limits" $limits }}{{ end -}}
{{- if $requests }}{{ $_ := set $out "requests" $requests }}{{ end -}}
{{- if $out }}{{ toYaml $out }}{{ end -}}
{{- end -}}

{{- define "gossamer.podAnnotations" -}}
linkerd.io/created-by: {{ printf "gossamer/install %s" (include "gossamer.tag" .) | quote }}
linkerd.io/proxy-version: {{ include "gossamer.imageTag" (dict "root" . "key" "proxy") | quote }}
linkerd.io/trust-root-sha256: {{ .Values.identityTrustAnchorsPEM | sha256sum | quote }}
config.linkerd.io/default-inbound-policy: {{ .Values.proxy.defaultInboundPolicy | quote }}
{{- end -}}

{{/* proxy-init: (dict "root" $ "skipInbound" "8443") */}}
{{- define "gossamer.proxyInit" -}}
{{- $v := .root.Values -}}
{{- $inbound := list "4190" "4191" -}}
{{- with $v.proxyInit.ignoreInboundPorts }}{{ $inbound = append $inbound . }}{{ end -}}
{{- with .skipInbound }}{{ $inbound = append $inbound . }}{{ end -}}
{{- $outbound := list "443,6443" -}}
{{- with $v.proxyInit.ignoreOutboundPorts }}{{ $outbound = append $outbound . }}{{ end -}}
- name: linkerd-init
  image: {{ include "gossamer.image" (dict "root" .root "key" "proxyInit" "name" "proxy-init") | quote }}
  imagePullPolicy: {{ $v.image.pullPolicy }}
  command: [python, -m, gossamer_proxy_init]
  args:
  - --incoming-proxy-port
  - "4143"
  - --outgoing-proxy-port
  - "4140"
  - --proxy-uid
  - {{ $v.proxy.uid | quote }}
  - --inbound-ports-to-ignore
  - {{ join "," $inbound | quote }}
  - --outbound-ports-to-ignore
  - {{ join "," $outbound | quote }}
  - --iptables-mode
  - {{ $v.proxyInit.iptablesMode | quote }}
  - {{ printf "--ipv6=%t" (not $v.disableIPv6) | quote }}
  securityContext:
    allowPrivilegeEscalation: false
    capabilities:
      add: [NET_ADMIN, NET_RAW]
    privileged: false
    readOnlyRootFilesystem: true
    runAsGroup: 65534
    runAsNonRoot: true
    runAsUser: 65534
    seccompProfile:
      type: RuntimeDefault
  terminationMessagePolicy: FallbackToLogsOnError
  volumeMounts:
  - mountPath: /run
    name: linkerd-proxy-init-xtables-lock
{{- end -}}

{{/* The proxy container: (dict "root" $ "inboundPorts" "8080,9990" "env" (dict NAME value)) */}}
{{- define "gossamer.proxy" -}}
{{- $v := .root.Values -}}
{{- $ns := .root.Release.Namespace -}}
{{- $td := include "gossamer.trustDomain" .root -}}
{{- $svc := printf "%s.svc.%s" $ns $v.clusterDomain -}}
{{- $over := .env -}}
{{- $dstName := printf "gossamer-destination.%s.serviceaccount.identity.%s.%s" $ns $ns $td -}}
{{- $cpu := $v.proxy.resources.cpu -}}
{{- $listen := ternary "0.0.0.0" "[::]" $v.disableIPv6 -}}
- name: linkerd-proxy
  image: {{ include "gossamer.image" (dict "root" .root "key" "proxy" "name" "proxy") | quote }}
  imagePullPolicy: {{ $v.image.pullPolicy }}
  env:
  - name: _pod_name
    valueFrom: {fieldRef: {fieldPath: metadata.name}}
  - name: _pod_ns
    valueFrom: {fieldRef: {fieldPath: metadata.namespace}}
  - name: _pod_uid
    valueFrom: {fieldRef: {fieldPath: metadata.uid}}
  - name: _pod_ip
    valueFrom: {fieldRef: {fieldPath: status.podIP}}
  - name: _pod_nodeName
    valueFrom: {fieldRef: {fieldPath: spec.nodeName}}
  - name: _pod_sa
    valueFrom: {fieldRef: {fieldPath: spec.serviceAccountName}}
  - name: _pod_containerName
    value: linkerd-proxy
  - name: _l5d_ns
    value: {{ $ns | quote }}
  - name: _l5d_trustdomain
    value: {{ $td | quote }}
  {{- if $cpu.limit }}
  {{- $limit := toString $cpu.limit }}
  {{- $cores := 0 }}
  {{- if hasSuffix "m" $limit }}
  {{- $cores = divf (trimSuffix "m" $limit | float64) 1000 | ceil | int }}
  {{- else }}
  {{- $cores = $limit | float64 | ceil | int }}
  {{- end }}
  - name: LINKERD2_PROXY_CORES
    value: {{ max 1 $cores | toString | quote }}
  {{- else }}
  - name: LINKERD2_PROXY_CORES
    value: "1"
  - name: LINKERD2_PROXY_CORES_MIN
    value: "1"
  {{- end }}
  - name: LINKERD2_PROXY_SHUTDOWN_ENDPOINT_ENABLED
    value: "false"
  - name: LINKERD2_PROXY_LOG
    value: {{ $v.proxy.logLevel | quote }}
  - name: LINKERD2_PROXY_LOG_FORMAT
    value: {{ $v.proxy.logFormat | quote }}
  - name: LINKERD2_PROXY_DESTINATION_SVC_ADDR
    value: {{ get $over "LINKERD2_PROXY_DESTINATION_SVC_ADDR" | default (printf "gossamer-dst.%s:8086" $svc) | quote }}
  - name: LINKERD2_PROXY_DESTINATION_SVC_NAME
    value: {{ $dstName | quote }}
  - name: LINKERD2_PROXY_DESTINATION_PROFILE_NETWORKS
    value: {{ $v.clusterNetworks | quote }}
  - name: LINKERD2_PROXY_DESTINATION_PROFILE_SUFFIXES
    value: {{ printf "svc.%s." $v.clusterDomain | quote }}
  - name: LINKERD2_PROXY_DESTINATION_CONTEXT
    value: '{"ns":"$(_pod_ns)", "nodeName":"$(_pod_nodeName)", "pod":"$(_pod_name)"}'
  - name: LINKERD2_PROXY_POLICY_SVC_ADDR
    value: {{ get $over "LINKERD2_PROXY_POLICY_SVC_ADDR" | default (printf "gossamer-dst.%s:8090" $svc) | quote }}
  - name: LINKERD2_PROXY_POLICY_SVC_NAME
    value: {{ $dstName | quote }}
  - name: LINKERD2_PROXY_POLICY_WORKLOAD
    value: '{"ns":"$(_pod_ns)", "pod":"$(_pod_name)"}'
  - name: LINKERD2_PROXY_POLICY_CLUSTER_NETWORKS
    value: {{ $v.clusterNetworks | quote }}
  - name: LINKERD2_PROXY_INBOUND_DEFAULT_POLICY
    value: {{ $v.proxy.defaultInboundPolicy | quote }}
  - name: LINKERD2_PROXY_INBOUND_PORTS
    value: {{ .inboundPorts | quote }}
  - name: LINKERD2_PROXY_CONTROL_STREAM_INITIAL_TIMEOUT
    value: 3s
  - name: LINKERD2_PROXY_CONTROL_STREAM_IDLE_TIMEOUT
    value: 5m
  - name: LINKERD2_PROXY_CONTROL_STREAM_LIFETIME
    value: 1h
  - name: LINKERD2_PROXY_INBOUND_CONNECT_TIMEOUT
    value: 100ms
  - name: LINKERD2_PROXY_OUTBOUND_CONNECT_TIMEOUT
    value: 1000ms
  - name: LINKERD2_PROXY_OUTBOUND_DISCOVERY_IDLE_TIMEOUT
    value: 5s
  - name: LINKERD2_PROXY_INBOUND_DISCOVERY_IDLE_TIMEOUT
    value: 90s
  - name: LINKERD2_PROXY_CONTROL_LISTEN_ADDR
    value: {{ printf "%s:4190" $listen | quote }}
  - name: LINKERD2_PROXY_ADMIN_LISTEN_ADDR
    value: {{ printf "%s:4191" $listen | quote }}
  - name: LINKERD2_PROXY_OUTBOUND_LISTEN_ADDRS
    value: {{ ternary "127.0.0.1:4140" "127.0.0.1:4140,[::1]:4140" $v.disableIPv6 | quote }}
  - name: LINKERD2_PROXY_INBOUND_LISTEN_ADDR
    value: {{ printf "%s:4143" $listen | quote }}
  - name: LINKERD2_PROXY_INBOUND_IPS
    valueFrom: {fieldRef: {fieldPath: status.podIPs}}
  - name: LINKERD2_PROXY_INBOUND_ACCEPT_KEEPALIVE
    value: 10000ms
  - name: LINKERD2_PROXY_OUTBOUND_CONNECT_KEEPALIVE
    value: 10000ms
  - name: LINKERD2_PROXY_INBOUND_ACCEPT_USER_TIMEOUT
    value: 30s
  - name: LINKERD2_PROXY_OUTBOUND_CONNECT_USER_TIMEOUT
    value: 30s
  - name: LINKERD2_PROXY_OUTBOUND_METRICS_HOSTNAME_LABELS
    value: "false"
  - name: LINKERD2_PROXY_INBOUND_SERVER_HTTP2_KEEP_ALIVE_INTERVAL
    value: 10s
  - name: LINKERD2_PROXY_INBOUND_SERVER_HTTP2_KEEP_ALIVE_TIMEOUT
    value: 3s
  - name: LINKERD2_PROXY_OUTBOUND_SERVER_HTTP2_KEEP_ALIVE_INTERVAL
    value: 10s
  - name: LINKERD2_PROXY_OUTBOUND_SERVER_HTTP2_KEEP_ALIVE_TIMEOUT
    value: 3s
  - name: LINKERD2_PROXY_IDENTITY_DIR
    value: /var/run/linkerd/identity/end-entity
  - name: LINKERD2_PROXY_IDENTITY_TRUST_ANCHORS
    value: {{ $v.identityTrustAnchorsPEM | quote }}
  - name: LINKERD2_PROXY_IDENTITY_TOKEN_FILE
    value: /var/run/secrets/tokens/linkerd-identity-token
  - name: LINKERD2_PROXY_IDENTITY_SVC_ADDR
    value: {{ get $over "LINKERD2_PROXY_IDENTITY_SVC_ADDR" | default (printf "gossamer-identity.%s:8080" $svc) | quote }}
  - name: LINKERD2_PROXY_IDENTITY_SVC_NAME
    value: {{ printf "gossamer-identity.%s.serviceaccount.identity.%s.%s" $ns $ns $td | quote }}
  - name: LINKERD2_PROXY_IDENTITY_LOCAL_NAME
    value: {{ printf "$(_pod_sa).$(_pod_ns).serviceaccount.identity.%s.%s" $ns $td | quote }}
  ports:
  - containerPort: 4143
    name: linkerd-proxy
  - containerPort: 4191
    name: linkerd-admin
  livenessProbe:
    httpGet: {path: /live, port: 4191}
    initialDelaySeconds: 10
  readinessProbe:
    httpGet: {path: /ready, port: 4191}
    initialDelaySeconds: 2
  securityContext:
    allowPrivilegeEscalation: false
    readOnlyRootFilesystem: true
    runAsNonRoot: true
    runAsUser: {{ $v.proxy.uid }}
    seccompProfile:
      type: RuntimeDefault
  terminationMessagePolicy: FallbackToLogsOnError
  volumeMounts:
  - mountPath: /var/run/linkerd/identity/end-entity
    name: linkerd-identity-end-entity
  - mountPath: /var/run/secrets/tokens
    name: linkerd-identity-token
  {{- with (include "gossamer.resources" $v.proxy.resources) }}
  resources:
    {{- . | nindent 4 }}
  {{- end }}
  {{- if $v.proxy.nativeSidecar }}
  restartPolicy: Always
  startupProbe:
    httpGet: {path: {{ .startupPath | default "/ready" }}, port: 4191}
    periodSeconds: 1
    failureThreshold: 120
  {{- else }}
  lifecycle:
    postStart:
      exec:
        command: [gossamer-await, --timeout=2m, --port=4191]
  {{- end }}
{{- end -}}

{{- define "gossamer.meshVolumes" -}}
- name: linkerd-proxy-init-xtables-lock
  emptyDir: {}
- name: linkerd-identity-end-entity
  emptyDir:
    medium: Memory
- name: linkerd-identity-token
  projected:
    sources:
    - serviceAccountToken:
        audience: identity.l5d.io
        expirationSeconds: 86400
        path: linkerd-identity-token
{{- end -}}

{{/*
A control-plane Deployment: (dict "root" $ "component" "identity" "image" "identity"
"grpcPort" 8080 "grpcPortName" "grpc" "adminPort" 9990 "inboundPorts" "8080,9990"
"extraPorts" <yaml list> "resources" .Values.identityResources "env" <yaml list>
"volumes" <yaml list> "mounts" <yaml list> "proxyEnv" (dict) "skipInbound" "")
*/}}
{{- define "gossamer.deployment" -}}
{{- $root := .root -}}
{{- $v := $root.Values -}}
{{- $labels := dict "root" $root "component" .component -}}
{{- $inbound := .inboundPorts -}}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: gossamer-{{ .component }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "gossamer.componentLabels" $labels | nindent 4 }}
spec:
  replicas: {{ $v.controllerReplicas }}
  revisionHistoryLimit: 10
  selector:
    matchLabels:
      {{- include "gossamer.selectorLabels" $labels | nindent 6 }}
  strategy:
    rollingUpdate:
      maxSurge: 25%
      maxUnavailable: 1
  template:
    metadata:
      annotations:
        {{- include "gossamer.podAnnotations" $root | nindent 8 }}
      labels:
        {{- with $v.podLabels }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
        {{- include "gossamer.componentLabels" $labels | nindent 8 }}
        linkerd.io/workload-ns: {{ $root.Release.Namespace }}
        linkerd.io/proxy-deployment: gossamer-{{ .component }}
    spec:
      serviceAccountName: gossamer-{{ .component }}
      securityContext:
        seccompProfile:
          type: RuntimeDefault
      {{- with $v.nodeSelector }}
      nodeSelector:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $v.tolerations }}
      tolerations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- if $v.enablePodAntiAffinity }}
      affinity:
        podAntiAffinity:
          requiredDuringSchedulingIgnoredDuringExecution:
          - labelSelector:
              matchLabels:
                {{- include "gossamer.selectorLabels" $labels | nindent 16 }}
            topologyKey: kubernetes.io/hostname
          preferredDuringSchedulingIgnoredDuringExecution:
          - weight: 100
            podAffinityTerm:
              labelSelector:
                matchLabels:
                  {{- include "gossamer.selectorLabels" $labels | nindent 18 }}
              topologyKey: topology.kubernetes.io/zone
      {{- end }}
      {{- $proxy := include "gossamer.proxy" (dict "root" $root "inboundPorts" $inbound "env" .proxyEnv "startupPath" .proxyStartupPath) }}
      initContainers:
      {{- include "gossamer.proxyInit" (dict "root" $root "skipInbound" .skipInbound) | nindent 6 }}
      {{- if $v.proxy.nativeSidecar }}
      {{- $proxy | nindent 6 }}
      {{- end }}
      containers:
      {{- if not $v.proxy.nativeSidecar }}
      {{- $proxy | nindent 6 }}
      {{- end }}
      - name: {{ .component }}
        image: {{ include "gossamer.image" (dict "root" $root "key" .image "name" .image) | quote }}
        imagePullPolicy: {{ $v.image.pullPolicy }}
        env:
        {{- .env | nindent 8 }}
        ports:
        - name: {{ .grpcPortName }}
          containerPort: {{ .grpcPort }}
        {{- with .extraPorts }}
        {{- . | nindent 8 }}
        {{- end }}
        - name: admin-http
          containerPort: {{ .adminPort }}
        livenessProbe:
          httpGet: {path: /live, port: admin-http}
          initialDelaySeconds: 10
        readinessProbe:
          httpGet: {path: /ready, port: admin-http}
          failureThreshold: 7
        securityContext:
          allowPrivilegeEscalation: false
          capabilities:
            drop: [ALL]
          readOnlyRootFilesystem: true
          runAsNonRoot: true
          runAsUser: 2103
          runAsGroup: 2103
          seccompProfile:
            type: RuntimeDefault
        terminationMessagePolicy: FallbackToLogsOnError
        {{- with (include "gossamer.resources" .resources) }}
        resources:
          {{- . | nindent 10 }}
        {{- end }}
        {{- with .mounts }}
        volumeMounts:
          {{- . | nindent 8 }}
        {{- end }}
      volumes:
      {{- with .volumes }}
      {{- . | nindent 6 }}
      {{- end }}
      {{- include "gossamer.meshVolumes" $root | nindent 6 }}
{{- end -}}

{{/* ServiceAccount, ClusterRole(Binding) and PodDisruptionBudget of a component. */}}
{{- define "gossamer.componentRbac" -}}
{{- $root := .root -}}
{{- $labels := dict "root" $root "component" .component -}}
{{- $role := printf "gossamer-%s-%s" $root.Release.Namespace .component -}}
apiVersion: v1
kind: ServiceAccount
metadata:
  name: gossamer-{{ .component }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "gossamer.componentLabels" $labels | nindent 4 }}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: {{ $role }}
  labels:
    {{- include "gossamer.componentLabels" $labels | nindent 4 }}
rules:
{{- .rules | nindent 0 }}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: {{ $role }}
  labels:
    {{- include "gossamer.componentLabels" $labels | nindent 4 }}
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: ClusterRole
  name: {{ $role }}
subjects:
- kind: ServiceAccount
  name: gossamer-{{ .component }}
  namespace: {{ $root.Release.Namespace }}
{{- if $root.Values.enablePodDisruptionBudget }}
---
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: gossamer-{{ .component }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "gossamer.componentLabels" $labels | nindent 4 }}
spec:
  maxUnavailable: 1
  selector:
    matchLabels:
      {{- include "gossamer.selectorLabels" $labels | nindent 6 }}
{{- end }}
{{- end -}}
