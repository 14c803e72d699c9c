{{/* Chart name, at most 63 characters. */}}
{{- define "sconce.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Fully qualified app name: the release name, with the chart name unless it already contains it. */}}
{{- define "sconce.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "sconce.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "sconce.labels" -}}
helm.sh/chart: {{ include "sconce.chart" . }}
{{ include "sconce.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "sconce.selectorLabels" -}}
app.kubernetes.io/name: {{ include "sconce.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "sconce.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "sconce.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* "cuda" when GPUs are requested, else "cpu": picks the image flavour and the default --device. */}}
{{- define "sconce.flavor" -}}
{{- if .Values.gpu.count }}cuda{{ else }}cpu{{ end }}
{{- end }}

{{- define "sconce.image" -}}
{{- $tag := default (printf "%s-%s" .Chart.AppVersion (include "sconce.flavor" .)) .Values.image.tag }}
{{- printf "%s:%s" .Values.image.repository $tag }}
{{- end }}

{{/* The Secret this chart creates for values given inline (admin key, HF token, database and Redis URLs). */}}
{{- define "sconce.secretName" -}}
{{- printf "%s-secrets" (include "sconce.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Whether the chart's own Secret has anything to hold. */}}
{{- define "sconce.createSecret" -}}
{{- if or .Values.adminKey.value .Values.hfToken.value .Values.gateway.databaseUrl.value .Values.gateway.redisUrl.value }}true{{ end }}
{{- end }}

{{/*
The config file as the ConfigMap holds it: with the gateway on, the chart's [gateway] table, then
.Values.config. ${NAME} placeholders are filled from Secrets by the init container.
*/}}
{{- define "sconce.configToml" -}}
{{- if .Values.gateway.enabled }}
{{- if and (eq .Values.gateway.auth "required") (not (or .Values.adminKey.value .Values.adminKey.existingSecret)) }}
{{- fail "gateway.enabled with gateway.auth=required needs an admin key: set adminKey.value or adminKey.existingSecret (it becomes SCONCE_ADMIN_KEY), or set gateway.auth=off" }}
{{- end }}
# Written by the chart from .Values.gateway.
[gateway]
enabled = true
auth = {{ .Values.gateway.auth | quote }}
admin_key_env = "SCONCE_ADMIN_KEY"
data_dir = {{ .Values.persistence.mountPath | quote }}
{{- if or .Values.gateway.databaseUrl.value .Values.gateway.databaseUrl.existingSecret }}
database_url = "${GATEWAY_DATABASE_URL}"
{{- end }}
{{- if or .Values.gateway.redisUrl.value .Values.gateway.redisUrl.existingSecret }}
redis_url = "${GATEWAY_REDIS_URL}"
{{- end }}
{{- with .Values.gateway.otlpEndpoint }}
otlp_endpoint = {{ . | quote }}
{{- end }}
{{- with .Values.gateway.ledgerBatchIntervalMs }}
ledger_batch_interval_ms = {{ . }}
{{- end }}

{{ end }}
{{- .Values.config }}
{{- end }}

{{/* Names of configSecretEnv variables, space-separated, for the init container. */}}
{{- define "sconce.configSecretVars" -}}
{{- $names := list }}
{{- range .Values.configSecretEnv }}
{{- $names = append $names .name }}
{{- end }}
{{- join " " $names }}
{{- end }}
