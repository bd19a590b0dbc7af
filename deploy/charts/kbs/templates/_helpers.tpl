{{- define "kbs.labels" -}}
app.kubernetes.io/name: kbs
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}
{{- define "kbs.storageSecret" -}}
{{- .Values.storage.existingSecret | default (printf "%s-storage" .Release.Name) -}}
{{- end -}}
{{- define "kbs.adminSecret" -}}
{{- .Values.admin.existingSecret | default (printf "%s-auth-public-key" .Release.Name) -}}
{{- end -}}
{{- define "kbs.signerSecret" -}}
{{- .Values.tokenSigner.existingSecret | default (printf "%s-token-signer" .Release.Name) -}}
{{- end -}}
