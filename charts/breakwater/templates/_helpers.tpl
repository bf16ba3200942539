{{/*
The chart's name, or nameOverride.
*/}}
{{- define "breakwater.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The release's full name: the release name, with the chart name appended
unless it is already part of it. Truncated to 63 characters (DNS labels).
*/}}
{{- define "breakwater.fullname" -}}
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

{{- define "breakwater.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "breakwater.labels" -}}
helm.sh/chart: {{ include "breakwater.chart" . }}
{{ include "breakwater.selectorLabels" . }}
{{- if .Chart.AppVersion }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "breakwater.selectorLabels" -}}
app.kubernetes.io/name: {{ include "breakwater.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "breakwater.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "breakwater.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
The rendered breakwater config file: .Values.config (YAML, or one string)
through tpl, so that it may refer to other values. ${VAR}s are left for
breakwater.
*/}}
{{- define "breakwater.config" -}}
{{- if kindIs "string" .Values.config }}
{{- tpl .Values.config . }}
{{- else }}
{{- tpl (toYaml .Values.config) . }}
{{- end }}
{{- include "breakwater.store" . }}
{{- end }}

{{/*
The store block, from .Values.store, appended to the config when
store.redis.url (or addrs) is set. A config that has its own store: block
and these values too is refused by breakwater (duplicate key).
*/}}
{{- define "breakwater.store" -}}
{{- $r := .Values.store.redis }}
{{- if or $r.url $r.addrs }}
store:
  redis:
    {{- with $r.url }}
    url: {{ . | quote }}
    {{- end }}
    mode: {{ $r.mode | default "single" }}
    {{- with $r.masterName }}
    master_name: {{ . | quote }}
    {{- end }}
    {{- with $r.addrs }}
    addrs: {{ toJson . }}
    {{- end }}
    timeout: {{ $r.timeout | default "50ms" }}
    key_prefix: {{ $r.keyPrefix | quote }}
    {{- if $r.existingSecret }}
    password: ${BREAKWATER_REDIS_PASSWORD}
    {{- end }}
  replicas: {{ .Values.store.replicas | default .Values.replicaCount }}
  on_error: {{ .Values.store.onError | default "local" }}
{{- end }}
{{- end }}

{{/*
A value of the config, by path: (list $ "admin" "listen"). Works for both
forms of .Values.config.
*/}}
{{- define "breakwater.configValue" -}}
{{- $root := index . 0 }}
{{- $v := $root.Values.config }}
{{- if kindIs "string" $v }}
{{- $v = include "breakwater.config" $root | fromYaml }}
{{- end }}
{{- range rest . }}
{{- if kindIs "map" $v }}
{{- $v = get $v . }}
{{- else }}
{{- $v = "" }}
{{- end }}
{{- end }}
{{- $v }}
{{- end }}

{{/*
The port of a listen address ("0.0.0.0:8080", "[::]:8080", ":8080").
*/}}
{{- define "breakwater.portOf" -}}
{{- $parts := splitList ":" (toString .) }}
{{- if lt (len $parts) 2 }}
{{- fail (printf "listen address %q has no port" (toString .)) }}
{{- end }}
{{- last $parts }}
{{- end }}

{{- define "breakwater.isLoopback" -}}
{{- $host := trimSuffix (printf ":%s" (include "breakwater.portOf" .)) (toString .) | trimPrefix "[" | trimSuffix "]" }}
{{- if or (eq $host "localhost") (eq $host "::1") (hasPrefix "127." $host) }}true{{ end }}
{{- end }}

{{/*
The data and admin ports, from the config's listen addresses, with the
checks that keep the pod reachable.
*/}}
{{- define "breakwater.dataPort" -}}
{{- $listen := include "breakwater.configValue" (list . "listen") | default "127.0.0.1:8080" }}
{{- if and (eq .Values.service.target "breakwater") (include "breakwater.isLoopback" $listen) }}
{{- fail (printf "service.target is breakwater but config.listen is %s: a Service cannot reach a loopback address; listen on 0.0.0.0" $listen) }}
{{- end }}
{{- include "breakwater.portOf" $listen }}
{{- end }}

{{- define "breakwater.adminPort" -}}
{{- $admin := include "breakwater.configValue" (list . "admin" "listen") | default "127.0.0.1:9901" }}
{{- if include "breakwater.isLoopback" $admin }}
{{- fail (printf "config.admin.listen is %s: kubelet probes cannot reach a loopback address; listen on 0.0.0.0:9901 with admin.allow_remote: true and admin.token" $admin) }}
{{- end }}
{{- include "breakwater.portOf" $admin }}
{{- end }}

{{- define "breakwater.adminSecretName" -}}
{{- .Values.breakwater.adminToken.existingSecret | default (printf "%s-admin" (include "breakwater.fullname" .)) }}
{{- end }}

{{- define "breakwater.image" -}}
{{- printf "%s:%s" .Values.breakwater.image.repository (.Values.breakwater.image.tag | default .Chart.AppVersion) }}
{{- end }}
