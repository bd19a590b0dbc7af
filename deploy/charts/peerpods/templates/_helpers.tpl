{{/* The Secret the adaptor reads its cloud credentials from. */}}
{{- define "peerpods.secretName" -}}
{{- if eq .Values.secrets.mode "reference" -}}
{{- required "secrets.existingSecretName is required with secrets.mode reference" .Values.secrets.existingSecretName -}}
{{- else -}}
peer-pods-secret
{{- end -}}
{{- end -}}

{{- define "peerpods.sshKeySecretName" -}}
{{- if eq .Values.secrets.mode "reference" -}}
{{- .Values.secrets.existingSshKeySecretName -}}
{{- else -}}
ssh-key-secret
{{- end -}}
{{- end -}}

{{- define "peerpods.tlsSecretName" -}}
{{- if eq .Values.secrets.mode "reference" -}}
{{- .Values.secrets.existingTlsSecretName -}}
{{- else -}}
certs-for-tls
{{- end -}}
{{- end -}}

{{/* This provider's keys of providerConfigs / providerSecrets. */}}
{{- define "peerpods.config" -}}
{{- toYaml (index (.Values.providerConfigs | default dict) .Values.provider | default dict) -}}
{{- end -}}
{{- define "peerpods.providerSecrets" -}}
{{- toYaml (index (.Values.providerSecrets | default dict) .Values.provider | default dict) -}}
{{- end -}}

{{/* "true" when custom tunnel certificates are configured (CACERT_FILE or CERT_FILE set). */}}
{{- define "peerpods.hasTlsCerts" -}}
{{- $config := include "peerpods.config" . | fromYaml -}}
{{- if and (or (index $config "CACERT_FILE") (index $config "CERT_FILE")) (include "peerpods.tlsSecretName" .) -}}
true
{{- end -}}
{{- end -}}

{{- define "peerpods.labels" -}}
app.kubernetes.io/name: peerpods
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}
