{{/* Name prefix of every object: <prefix>-exporter, -controller, -scheduler. */}}
{{- define "edgewatt.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "edgewatt.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ default .Chart.Name .Values.nameOverride }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: edgewatt
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Selector labels; call with (dict "root" $ "component" "exporter"). */}}
{{- define "edgewatt.selector" -}}
app.kubernetes.io/name: {{ default .root.Chart.Name .root.Values.nameOverride }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* Image reference of an edgewatt component: [<registry>/]<repository>(:<tag>|@<digest>).
`global.imageRegistry` overrides the image's registry (the Bitnami convention, so an umbrella
chart's global applies too); the tag defaults to appVersion, the tag `make images` writes.
Call with (dict "root" $ "image" .Values.x.image). */}}
{{- define "edgewatt.image" -}}
{{- $global := .root.Values.global | default dict -}}
{{- $registry := $global.imageRegistry | default .image.registry | default "" | trimSuffix "/" -}}
{{- $name := .image.repository | required "image.repository is required" -}}
{{- if $registry }}{{ $name = printf "%s/%s" $registry $name }}{{ end -}}
{{- if .image.digest -}}
{{- if not (regexMatch "^[a-z0-9]+:[a-f0-9]{32,}$" .image.digest) -}}
{{- fail (printf "image.digest %q of %s is not a digest such as sha256:<64 hex digits>" .image.digest $name) -}}
{{- end -}}
{{ $name }}@{{ .image.digest }}
{{- else -}}
{{ $name }}:{{ .image.tag | default .root.Chart.AppVersion }}
{{- end -}}
{{- end -}}

{{/* "true" when objects of the Prometheus operator's API are to be rendered; dict: root, value
(monitoring.monitors or monitoring.prometheusRule: auto | true | false). `auto` asks the cluster
at install time (.Capabilities), which `helm template` and GitOps renderers cannot: they set true. */}}
{{- define "edgewatt.withOperator" -}}
{{- if eq (toString .value) "auto" -}}
{{- if .root.Capabilities.APIVersions.Has "monitoring.coreos.com/v1" }}true{{ end -}}
{{- else if eq (toString .value) "true" -}}
true
{{- end -}}
{{- end -}}

{{/* Pod annotations for Prometheus' annotation-based pod discovery (monitoring.scrapeAnnotations);
dict: root, port, scheme. Empty when off. */}}
{{- define "edgewatt.scrapeAnnotations" -}}
{{- if .root.Values.monitoring.scrapeAnnotations -}}
prometheus.io/scrape: "true"
prometheus.io/port: {{ .port | quote }}
prometheus.io/path: /metrics
{{- if eq .scheme "https" }}
prometheus.io/scheme: https
{{- end }}
{{- end -}}
{{- end -}}

{{/* Restricted-PodSecurity container securityContext (controller, extender, second scheduler). */}}
{{- define "edgewatt.restrictedContainer" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
capabilities:
  drop: [ALL]
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "edgewatt.restrictedPod" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
fsGroup: 65532
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* Prometheus client flags (controller and extender). */}}
{{- define "edgewatt.prometheusArgs" -}}
- --prometheus-url={{ .Values.prometheus.url }}
- --prometheus-timeout={{ .Values.prometheus.timeout }}
- --metric-prefix={{ .Values.metricPrefix }}
{{- if .Values.prometheus.basicAuthSecret }}
- --prometheus-basic-auth-file=/etc/edgewatt/prometheus-auth/auth
{{- end }}
{{- if .Values.prometheus.caConfigMap }}
- --prometheus-ca-file=/etc/edgewatt/prometheus-ca/ca.crt
{{- end }}
{{- if .Values.prometheus.bearerTokenFromServiceAccount }}
- --prometheus-bearer-token-file=/var/run/secrets/kubernetes.io/serviceaccount/token
{{- end }}
{{- if .Values.prometheus.insecureSkipVerify }}
- --prometheus-insecure-skip-verify
{{- end }}
{{- end -}}

{{- define "edgewatt.prometheusMounts" -}}
- {name: tmp, mountPath: /tmp}
{{- if .Values.prometheus.basicAuthSecret }}
- {name: prometheus-auth, mountPath: /etc/edgewatt/prometheus-auth, readOnly: true}
{{- end }}
{{- if .Values.prometheus.caConfigMap }}
- {name: prometheus-ca, mountPath: /etc/edgewatt/prometheus-ca, readOnly: true}
{{- end }}
{{- end -}}

{{- define "edgewatt.prometheusVolumes" -}}
- {name: tmp, emptyDir: {}}
{{- if .Values.prometheus.basicAuthSecret }}
- name: prometheus-auth
  secret: {secretName: {{ .Values.prometheus.basicAuthSecret }}}
{{- end }}
{{- if .Values.prometheus.caConfigMap }}
- name: prometheus-ca
  configMap: {name: {{ .Values.prometheus.caConfigMap }}}
{{- end }}
{{- end -}}

{{/* Preferred spreading of a Deployment's replicas over nodes. */}}
{{- define "edgewatt.spread" -}}
podAntiAffinity:
  preferredDuringSchedulingIgnoredDuringExecution:
    - weight: 100
      podAffinityTerm:
        topologyKey: kubernetes.io/hostname
        labelSelector:
          matchLabels: {{- include "edgewatt.selector" . | nindent 12 }}
{{- end -}}

{{/* The Pod Security level the release namespace needs: the exporter's host access (hostPID,
hostPath, capabilities) is `privileged`; without it every pod meets `restricted`. */}}
{{- define "edgewatt.podSecurityLevel" -}}
{{ if .Values.exporter.enabled }}privileged{{ else }}restricted{{ end }}
{{- end -}}

{{/* The enabled components in words ("exporter, controller and extender"). */}}
{{- define "edgewatt.components" -}}
{{- $c := list -}}
{{- if .Values.exporter.enabled }}{{ $c = append $c "exporter" }}{{ end -}}
{{- if .Values.controller.enabled }}{{ $c = append $c "controller" }}{{ end -}}
{{- if .Values.scheduler.enabled }}{{ $c = append $c "extender" }}{{ end -}}
{{- if gt (len $c) 1 -}}
{{ initial $c | join ", " }} and {{ last $c }}
{{- else -}}
{{ join "" $c }}
{{- end -}}
{{- end -}}
