{{/* The release's base name: the release name, or <release>-gpufabric unless the release name says gpufabric. */}}
{{- define "gpufabric.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "gpufabric.controller.name" -}}{{ include "gpufabric.fullname" . }}-controller{{- end -}}
{{- define "gpufabric.agent.name" -}}{{ include "gpufabric.fullname" . }}-agent{{- end -}}

{{/* Labels on every object; selectors use only name, instance and component. */}}
{{- define "gpufabric.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: gpufabric
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end -}}

{{- define "gpufabric.selectorLabels" -}}
app.kubernetes.io/name: gpufabric
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "gpufabric.image" -}}
{{- $root := index . 0 -}}{{- $repository := index . 1 -}}
{{- printf "%s/%s:%s" $root.Values.image.registry $repository (default $root.Chart.AppVersion $root.Values.image.tag) -}}
{{- end -}}

{{/* The Secret and key holding the controller's database URL; fails when neither a URL nor a Secret is given. */}}
{{- define "gpufabric.controller.databaseSecret" -}}
{{- $db := .Values.controller.database -}}
{{- if $db.url -}}
{{- if not (hasPrefix "postgresql" $db.url) -}}
{{- fail "controller.database.url must be a PostgreSQL URL (postgresql+psycopg://user:password@host:5432/db): the controller replicas share one database" -}}
{{- end -}}
{{- include "gpufabric.controller.name" . }}-db
{{- else -}}
{{- required "controller.database: set url (a PostgreSQL URL; the chart stores it in a Secret) or existingSecret (a Secret holding it under secretKey)" $db.existingSecret -}}
{{- end -}}
{{- end -}}

{{- define "gpufabric.controller.url" -}}
{{- printf "http://%s.%s.svc:%v" (include "gpufabric.controller.name" .) .Release.Namespace .Values.controller.service.port -}}
{{- end -}}

{{- define "gpufabric.agent.controllerUrl" -}}
{{- if .Values.agent.controllerUrl -}}
{{- .Values.agent.controllerUrl -}}
{{- else if .Values.controller.enabled -}}
{{- include "gpufabric.controller.url" . -}}
{{- else -}}
{{- required "agent.controllerUrl is required when controller.enabled is false (the agents must know where the controller is)" .Values.agent.controllerUrl -}}
{{- end -}}
{{- end -}}

{{- define "gpufabric.agent.bootstrapSecret" -}}
{{- $token := .Values.agent.bootstrapToken -}}
{{- if $token.value -}}
{{- include "gpufabric.agent.name" . }}-bootstrap
{{- else -}}
{{- required "agent.bootstrapToken: set value (the chart stores it in a Secret) or existingSecret (a Secret holding it under secretKey)" $token.existingSecret -}}
{{- end -}}
{{- end -}}

{{/* The ConfigMap holding the identity mapping file (docs/identity.md), empty when none is configured; fails for
values that cannot work: both a mapping and an existing ConfigMap, a mapping that is not YAML, or OIDC / Keystone
settings without a mapping (the controller would refuse to start). */}}
{{- define "gpufabric.controller.identityConfigMap" -}}
{{- $identity := .Values.controller.identity -}}
{{- $settings := .Values.controller.settings -}}
{{- if and $identity.mapping $identity.existingConfigMap -}}
{{- fail "controller.identity: set mapping or existingConfigMap, not both" -}}
{{- end -}}
{{- if and (or $identity.mapping $identity.existingConfigMap) $settings.identity_mapping_file -}}
{{- fail "controller.identity: the chart sets identity_mapping_file from controller.identity; drop it from controller.settings" -}}
{{- end -}}
{{- if $identity.mapping -}}
{{- $parsed := fromYaml $identity.mapping -}}
{{- if hasKey $parsed "Error" -}}
{{- fail (printf "controller.identity.mapping is not YAML: %s" (get $parsed "Error")) -}}
{{- end -}}
{{- include "gpufabric.controller.name" . }}-identity
{{- else if $identity.existingConfigMap -}}
{{- $identity.existingConfigMap -}}
{{- else if and (or $settings.oidc_issuer $settings.oidc_audience $settings.oidc_jwks_url $settings.keystone_url) (not $settings.identity_mapping_file) -}}
{{- fail "controller.identity: OIDC or Keystone sign-in needs the identity mapping file: set controller.identity.mapping (its YAML) or existingConfigMap" -}}
{{- end -}}
{{- end -}}
