{{/* The chart's name, 63 characters at most (a label value). */}}
{{- define "capoller.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The release's objects' name: the release's, with the chart's unless it holds it. */}}
{{- define "capoller.fullname" -}}
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

{{/* helm.sh/chart: name-version. */}}
{{- define "capoller.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The tag run: image.tag, else the chart's appVersion. */}}
{{- define "capoller.version" -}}
{{- default .Chart.AppVersion .Values.image.tag }}
{{- end }}

{{- define "capoller.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (include "capoller.version" .) }}
{{- end }}
{{- end }}

{{/*
The selector labels of a component: (dict "root" $ "component" "poller").
*/}}
{{- define "capoller.selectorLabels" -}}
app.kubernetes.io/name: {{ include "capoller.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* The recommended labels of every object: (dict "root" $ "component" "poller"). */}}
{{- define "capoller.labels" -}}
helm.sh/chart: {{ include "capoller.chart" .root }}
{{ include "capoller.selectorLabels" . }}
app.kubernetes.io/version: {{ include "capoller.version" .root | trunc 63 | trimSuffix "-" | quote }}
app.kubernetes.io/part-of: capoller
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
{{- end }}

{{- define "capoller.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "capoller.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* Where the Secrets are mounted, one directory each. */}}
{{- define "capoller.secretsDir" -}}/run/secrets/capoller{{- end }}

{{/*
The Secrets a pod mounts, and the variables that name their files:
(dict "root" $ "notify" false) for run's pods, true for notify's, which
reads only NATS's. A YAML {mounts: [{volume, secret, files: [{key, env}]}]};
a file without env is named in the configuration (an account's keys).
*/}}
{{- define "capoller.secretMounts" -}}
{{- $v := .root.Values }}
{{- $mounts := list }}
{{- with $v.engines.nats }}
{{- if .creds.existingSecret }}
{{- $mounts = append $mounts (dict "volume" "nats-creds" "secret" .creds.existingSecret "files" (list (dict "key" .creds.key "env" "CAPOLLER_NATS_CREDS"))) }}
{{- end }}
{{- if .nkeySeed.existingSecret }}
{{- $mounts = append $mounts (dict "volume" "nats-nkey-seed" "secret" .nkeySeed.existingSecret "files" (list (dict "key" .nkeySeed.key "env" "CAPOLLER_NATS_NKEY_SEED"))) }}
{{- end }}
{{- if .token.existingSecret }}
{{- $mounts = append $mounts (dict "volume" "nats-token" "secret" .token.existingSecret "files" (list (dict "key" .token.key "env" "CAPOLLER_NATS_TOKEN_FILE"))) }}
{{- end }}
{{- if .password.existingSecret }}
{{- $mounts = append $mounts (dict "volume" "nats-password" "secret" .password.existingSecret "files" (list (dict "key" .password.key "env" "CAPOLLER_NATS_PASSWORD_FILE"))) }}
{{- end }}
{{- if .tls.existingSecret }}
{{- $files := list }}
{{- if .tls.ca }}{{ $files = append $files (dict "key" .tls.ca "env" "CAPOLLER_NATS_CA") }}{{ end }}
{{- if .tls.cert }}{{ $files = append $files (dict "key" .tls.cert "env" "CAPOLLER_NATS_CERT") }}{{ end }}
{{- if .tls.key }}{{ $files = append $files (dict "key" .tls.key "env" "CAPOLLER_NATS_KEY") }}{{ end }}
{{- $mounts = append $mounts (dict "volume" "nats-tls" "secret" .tls.existingSecret "files" $files) }}
{{- end }}
{{- end }}
{{- if not .notify }}
{{- if eq $v.engines.checkpoint "redis" }}
{{- with $v.engines.redis }}
{{- if .password.existingSecret }}
{{- $mounts = append $mounts (dict "volume" "redis-password" "secret" .password.existingSecret "files" (list (dict "key" .password.key "env" "CAPOLLER_REDIS_PASSWORD_FILE"))) }}
{{- end }}
{{- if .tls.existingSecret }}
{{- $files := list }}
{{- if .tls.ca }}{{ $files = append $files (dict "key" .tls.ca "env" "CAPOLLER_REDIS_CA") }}{{ end }}
{{- if .tls.cert }}{{ $files = append $files (dict "key" .tls.cert "env" "CAPOLLER_REDIS_CERT") }}{{ end }}
{{- if .tls.key }}{{ $files = append $files (dict "key" .tls.key "env" "CAPOLLER_REDIS_KEY") }}{{ end }}
{{- $mounts = append $mounts (dict "volume" "redis-tls" "secret" .tls.existingSecret "files" $files) }}
{{- end }}
{{- end }}
{{- end }}
{{- if $v.hints.enabled }}
{{- with $v.hints }}
{{- $mounts = append $mounts (dict "volume" "hints-token" "secret" .token.existingSecret "files" (list (dict "key" .token.key "env" "CAPOLLER_HINTS_TOKEN_FILE"))) }}
{{- if .tls.existingSecret }}
{{- $mounts = append $mounts (dict "volume" "hints-tls" "secret" .tls.existingSecret "files" (list (dict "key" .tls.cert "env" "CAPOLLER_HINTS_TLS_CERT") (dict "key" .tls.key "env" "CAPOLLER_HINTS_TLS_KEY"))) }}
{{- end }}
{{- end }}
{{- end }}
{{- range $i, $a := $v.accounts }}
{{- if $a.existingSecret }}
{{- $mounts = append $mounts (dict "volume" (printf "account-%d" $i) "secret" $a.existingSecret "files" (include "capoller.accountFiles" $a | fromYamlArray)) }}
{{- end }}
{{- end }}
{{- else }}
{{- if $v.notify.secretFiles.existingSecret }}
{{- $mounts = append $mounts (dict "volume" "notify-files" "secret" $v.notify.secretFiles.existingSecret "files" (list) "whole" true) }}
{{- end }}
{{- end }}
{{- toYaml (dict "mounts" $mounts) }}
{{- end }}

{{/* The keys of an account's existingSecret, and the settings that name them. */}}
{{- define "capoller.accountFiles" -}}
- {key: access_key_id, setting: access_key_id_file}
- {key: access_key_secret, setting: access_key_secret_file}
{{- if eq .credentials.type "sts" }}
- {key: security_token, setting: security_token_file}
{{- end }}
{{- end }}

{{/* The volumes of (include "capoller.secretMounts" …). */}}
{{- define "capoller.secretVolumes" -}}
{{- range (include "capoller.secretMounts" . | fromYaml).mounts }}
- name: {{ .volume }}
  secret:
    secretName: {{ .secret }}
    defaultMode: 0440
    {{- if not .whole }}
    items:
      {{- range .files }}
      - {key: {{ .key | quote }}, path: {{ .key | quote }}}
      {{- end }}
    {{- end }}
{{- end }}
{{- end }}

{{- define "capoller.secretVolumeMounts" -}}
{{- range (include "capoller.secretMounts" . | fromYaml).mounts }}
- name: {{ .volume }}
  mountPath: {{ include "capoller.secretsDir" $.root }}/{{ .volume }}
  readOnly: true
{{- end }}
{{- end }}

{{/* The variables naming the mounted files. */}}
{{- define "capoller.secretEnv" -}}
{{- range (include "capoller.secretMounts" . | fromYaml).mounts }}
{{- $dir := printf "%s/%s" (include "capoller.secretsDir" $.root) .volume }}
{{- range .files }}
{{- if .env }}
- name: {{ .env }}
  value: {{ printf "%s/%s" $dir .key | quote }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}

{{/* NATS's settings and the ops address as variables, for run and notify alike. */}}
{{- define "capoller.natsEnv" -}}
- name: CAPOLLER_NATS_URL
  value: {{ .Values.engines.nats.url | quote }}
{{- if .Values.engines.nats.user }}
- name: CAPOLLER_NATS_USER
  value: {{ .Values.engines.nats.user | quote }}
{{- end }}
- name: CAPOLLER_METRICS_ADDR
  value: {{ printf ":%d" (int .Values.ops.port) | quote }}
{{- end }}

{{/*
run's configuration file: config, accounts with their mounted keys, and
nothing the variables set.
*/}}
{{- define "capoller.configFile" -}}
{{- $cfg := deepCopy .Values.config }}
{{- if .Values.accounts }}
{{- $accounts := list }}
{{- range $i, $a := .Values.accounts }}
{{- $out := omit $a "existingSecret" | deepCopy }}
{{- if $a.existingSecret }}
{{- $creds := deepCopy $a.credentials }}
{{- $_ := set $creds "source" "file" }}
{{- range (include "capoller.accountFiles" $a | fromYamlArray) }}
{{- $_ := set $creds .setting (printf "%s/account-%d/%s" (include "capoller.secretsDir" $) $i .key) }}
{{- end }}
{{- $_ := set $out "credentials" $creds }}
{{- end }}
{{- $accounts = append $accounts $out }}
{{- end }}
{{- $_ := set $cfg "accounts" $accounts }}
{{- end }}
{{- toYaml $cfg }}
{{- end }}

{{/*
The TCP ports of an engine's URL, comma-separated hosts included:
(dict "url" … "default" 6379).
*/}}
{{- define "capoller.urlPorts" -}}
{{- $ports := list }}
{{- range splitList "," .url }}
{{- $h := regexReplaceAll "^[a-zA-Z0-9+.-]+://" (trim .) "" }}
{{- $h = regexReplaceAll "^[^@/]*@" $h "" }}
{{- $h = regexReplaceAll "/.*$" $h "" }}
{{- if regexMatch ":[0-9]+$" $h }}
{{- $ports = append $ports (regexFind "[0-9]+$" $h | int) }}
{{- else }}
{{- $ports = append $ports (int $.default) }}
{{- end }}
{{- end }}
{{- toYaml (dict "ports" ($ports | uniq)) }}
{{- end }}

{{/* The values the schema cannot check, each refused naming the value and why. */}}
{{- define "capoller.validate" -}}
{{- $v := .Values }}
{{- if and $v.accounts (or (hasKey $v.config "regions") (hasKey $v.config "sources")) }}
{{- fail "config.regions and config.sources: with accounts, each account lists its own; remove them from config" }}
{{- end }}
{{- if not (or $v.accounts $v.credentials.existingSecret $v.credentials.ecsMetadata $v.credentials.defaultChain) }}
{{- fail "credentials.existingSecret: the default account needs an access key (ALIBABA_CLOUD_ACCESS_KEY_ID and ALIBABA_CLOUD_ACCESS_KEY_SECRET in a Secret), or credentials.ecsMetadata, or credentials.defaultChain (RRSA), or accounts" }}
{{- end }}
{{- $n := $v.engines.nats }}
{{- $ways := 0 }}
{{- range (list $n.creds.existingSecret $n.nkeySeed.existingSecret $n.token.existingSecret $n.password.existingSecret) }}
{{- if . }}{{ $ways = add1 $ways }}{{ end }}
{{- end }}
{{- if gt $ways 1 }}
{{- fail "engines.nats: choose one way to authenticate: creds, nkeySeed, token, or user with password" }}
{{- end }}
{{- if ne (empty $n.user) (empty $n.password.existingSecret) }}
{{- fail "engines.nats.user and engines.nats.password.existingSecret: give both, or neither" }}
{{- end }}
{{- if regexMatch "^[^/]*//[^/]*@" $n.url }}
{{- fail "engines.nats.url: no credentials in the URL (they would show in the Deployment); use engines.nats.creds, nkeySeed, token or password" }}
{{- end }}
{{- if eq $v.engines.checkpoint "redis" }}
{{- if regexMatch "^[^/]*//[^/@]*:[^/@]*@" $v.engines.redis.url }}
{{- fail "engines.redis.url: no password in the URL (it would show in the Deployment); use engines.redis.password.existingSecret" }}
{{- end }}
{{- if and $v.engines.redis.tls.existingSecret (not (hasPrefix "rediss" $v.engines.redis.url)) }}
{{- fail "engines.redis.tls: the TLS settings need a rediss://, rediss+cluster:// or rediss+sentinel:// URL" }}
{{- end }}
{{- end }}
{{- if $v.hints.enabled }}
{{- if not $v.hints.token.existingSecret }}
{{- fail "hints.token.existingSecret: required with hints.enabled: the endpoint would take anyone's pushes" }}
{{- end }}
{{- if and $v.hints.uid $v.accounts }}
{{- fail "hints.uid: the default account's uid, without accounts; with accounts, each names its own uid" }}
{{- end }}
{{- end }}
{{- range $i, $a := $v.accounts }}
{{- if $a.existingSecret }}
{{- if not (has $a.credentials.type (list "access_key" "sts" "ram_role_arn")) }}
{{- fail (printf "accounts[%d] (%s): existingSecret holds an access key, which credentials type %s does not read" $i $a.name $a.credentials.type) }}
{{- end }}
{{- if eq (default "file" $a.credentials.source) "env" }}
{{- fail (printf "accounts[%d] (%s): existingSecret is read as files: credentials.source must be file, or left out" $i $a.name) }}
{{- end }}
{{- range (list "access_key_id_file" "access_key_secret_file" "security_token_file") }}
{{- if hasKey $a.credentials . }}
{{- fail (printf "accounts[%d] (%s): credentials.%s is set by existingSecret; give one or the other" $i $a.name .) }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
{{- if and $v.notify.enabled (not $v.notify.config.webhooks) }}
{{- fail "notify.config.webhooks: notify needs at least one webhook" }}
{{- end }}
{{- end }}

{{/*
capoller.ecsMetadata is "true" when the pods need the instance's metadata
service (100.100.100.200): credentials.ecsMetadata, or an ecs_ram_role
account.
*/}}
{{- define "capoller.ecsMetadata" -}}
{{- $metadata := .Values.credentials.ecsMetadata }}
{{- range .Values.accounts }}
{{- if eq .credentials.type "ecs_ram_role" }}{{ $metadata = true }}{{ end }}
{{- end }}
{{- $metadata -}}
{{- end }}
