{{/* Names */}}
{{- define "mm-enrich.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "mm-enrich.fullname" -}}
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

{{- define "mm-enrich.workerName" -}}
{{- printf "%s-worker" (include "mm-enrich.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "mm-enrich.tritonName" -}}
{{- printf "%s-triton" (include "mm-enrich.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "mm-enrich.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "mm-enrich.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* Labels; call with (dict "ctx" $ "component" "worker") */}}
{{- define "mm-enrich.selectorLabels" -}}
app.kubernetes.io/name: {{ include "mm-enrich.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "mm-enrich.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .ctx.Chart.Name .ctx.Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "mm-enrich.selectorLabels" . }}
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
app.kubernetes.io/part-of: mm-enrich
{{- with .ctx.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "mm-enrich.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* The Triton gRPC endpoint the workers call. */}}
{{- define "mm-enrich.tritonUrl" -}}
{{- if .Values.triton.enabled }}
{{- printf "%s:%d" (include "mm-enrich.tritonName" .) (int .Values.triton.service.grpcPort) }}
{{- else }}
{{- required "worker.externalTritonUrl is required when triton.enabled is false" .Values.worker.externalTritonUrl }}
{{- end }}
{{- end }}

{{- define "mm-enrich.sasl" -}}
{{- hasPrefix "SASL" .Values.kafka.securityProtocol }}
{{- end }}

{{- define "mm-enrich.tls" -}}
{{- hasSuffix "SSL" .Values.kafka.securityProtocol }}
{{- end }}

{{/* Kafka credentials as environment variables, shared by the worker and the topics job. */}}
{{- define "mm-enrich.kafkaSecretEnv" -}}
{{- if eq (include "mm-enrich.sasl" .) "true" }}
- name: ENRICH_SASL_USERNAME
  valueFrom:
    secretKeyRef:
      name: {{ required "kafka.sasl.existingSecret is required for SASL_* protocols" .Values.kafka.sasl.existingSecret }}
      key: {{ .Values.kafka.sasl.usernameKey }}
- name: ENRICH_SASL_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ .Values.kafka.sasl.existingSecret }}
      key: {{ .Values.kafka.sasl.passwordKey }}
{{- end }}
{{- if and (eq (include "mm-enrich.tls" .) "true") .Values.kafka.tls.existingSecret }}
- name: ENRICH_SSL_CA_FILE
  value: /etc/enrich/kafka-tls/{{ .Values.kafka.tls.caKey }}
{{- if .Values.kafka.tls.certKey }}
- name: ENRICH_SSL_CERT_FILE
  value: /etc/enrich/kafka-tls/{{ .Values.kafka.tls.certKey }}
- name: ENRICH_SSL_KEY_FILE
  value: /etc/enrich/kafka-tls/{{ required "kafka.tls.keyKey is required with kafka.tls.certKey" .Values.kafka.tls.keyKey }}
{{- end }}
{{- end }}
{{- end }}

{{- define "mm-enrich.kafkaTlsVolumeMount" -}}
{{- if and (eq (include "mm-enrich.tls" .) "true") .Values.kafka.tls.existingSecret }}
- name: kafka-tls
  mountPath: /etc/enrich/kafka-tls
  readOnly: true
{{- end }}
{{- end }}

{{- define "mm-enrich.kafkaTlsVolume" -}}
{{- if and (eq (include "mm-enrich.tls" .) "true") .Values.kafka.tls.existingSecret }}
- name: kafka-tls
  secret:
    secretName: {{ .Values.kafka.tls.existingSecret }}
    defaultMode: 0440
{{- end }}
{{- end }}

{{/* The model bundle: an init container copying it out of an image, or a claim.
     Workers need only metadata, tokenizers and the codebook, not the weights,
     so theirs skips the ONNX files. Call with (dict "ctx" $ "for" "worker"|"triton"). */}}
{{- define "mm-enrich.bundleInitContainers" -}}
{{- $v := .ctx.Values.bundle }}
{{- if eq $v.source "image" }}
- name: bundle
  image: {{ printf "%s:%s" $v.image.repository $v.image.tag | quote }}
  imagePullPolicy: {{ $v.image.pullPolicy }}
  {{- if eq .for "worker" }}
  command: ["sh", "-c", "cd {{ $v.path }} && tar cf - --exclude='*.onnx' --exclude='*.onnx.data' models codebook.npz | tar xf - -C /out"]
  {{- else }}
  command: ["sh", "-c", "cp -R {{ $v.path }}/repository /out/"]
  {{- end }}
  securityContext:
    allowPrivilegeEscalation: false
    readOnlyRootFilesystem: true
    capabilities:
      drop: [ALL]
  resources:
    requests:
      cpu: 100m
      memory: 64Mi
    limits:
      memory: 256Mi
  volumeMounts:
    # Not at /bundle: that would hide the image's own files when bundle.path is /bundle.
    - name: bundle
      mountPath: /out
{{- end }}
{{- end }}

{{- define "mm-enrich.bundleVolume" -}}
{{- if eq .Values.bundle.source "image" }}
- name: bundle
  emptyDir: {}
{{- else }}
- name: bundle
  persistentVolumeClaim:
    claimName: {{ required "bundle.pvc.claimName is required when bundle.source is pvc" .Values.bundle.pvc.claimName }}
    readOnly: true
{{- end }}
{{- end }}

{{- define "mm-enrich.bundleMount" -}}
- name: bundle
  mountPath: /bundle
  readOnly: true
{{- if eq .Values.bundle.source "pvc" }}
  subPath: {{ trimPrefix "/" .Values.bundle.path }}
{{- end }}
{{- end }}

{{/* Checks across values that a JSON schema cannot express. */}}
{{- define "mm-enrich.validate" -}}
{{- $p := int .Values.kafka.partitions }}
{{- $autoscaled := or .Values.worker.autoscaling.enabled .Values.worker.keda.enabled }}
{{- if gt (int .Values.kafka.minInsyncReplicas) (int .Values.kafka.replicationFactor) }}
{{- fail (printf "kafka.minInsyncReplicas (%d) exceeds kafka.replicationFactor (%d): no write could succeed" (int .Values.kafka.minInsyncReplicas) (int .Values.kafka.replicationFactor)) }}
{{- end }}
{{- if and (not $autoscaled) (gt (int .Values.worker.replicas) $p) }}
{{- fail (printf "worker.replicas (%d) exceeds kafka.partitions (%d): extra consumers would sit idle" (int .Values.worker.replicas) $p) }}
{{- end }}
{{- if and .Values.worker.autoscaling.enabled (gt (int .Values.worker.autoscaling.maxReplicas) $p) }}
{{- fail (printf "worker.autoscaling.maxReplicas (%d) exceeds kafka.partitions (%d)" (int .Values.worker.autoscaling.maxReplicas) $p) }}
{{- end }}
{{- if and .Values.worker.keda.enabled (gt (int .Values.worker.keda.maxReplicas) $p) }}
{{- fail (printf "worker.keda.maxReplicas (%d) exceeds kafka.partitions (%d)" (int .Values.worker.keda.maxReplicas) $p) }}
{{- end }}
{{- if gt (int .Values.worker.autoscaling.minReplicas) (int .Values.worker.autoscaling.maxReplicas) }}
{{- fail "worker.autoscaling.minReplicas exceeds worker.autoscaling.maxReplicas" }}
{{- end }}
{{- if gt (int .Values.worker.keda.minReplicas) (int .Values.worker.keda.maxReplicas) }}
{{- fail "worker.keda.minReplicas exceeds worker.keda.maxReplicas" }}
{{- end }}
{{- if and .Values.triton.enabled (eq .Values.triton.modelRepository.source "objectStore") (not .Values.triton.modelRepository.objectStore.uri) }}
{{- fail "triton.modelRepository.objectStore.uri is required when triton.modelRepository.source is objectStore" }}
{{- end }}
{{- end }}
