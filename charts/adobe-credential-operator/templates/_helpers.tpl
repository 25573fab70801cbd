{{/*
The chart name, or nameOverride.
*/}}
{{- define "adobe-credential-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The prefix of every resource name: fullnameOverride, else <release>-<chart> (just <release> when
it already contains the chart name). Truncated to 63 characters, the limit of a DNS label.
*/}}
{{- define "adobe-credential-operator.fullname" -}}
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

{{/*
Chart name and version, for the helm.sh/chart label.
*/}}
{{- define "adobe-credential-operator.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Labels selecting the operator pods. Immutable in a Deployment: never add to them.
*/}}
{{- define "adobe-credential-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "adobe-credential-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: controller
{{- end }}

{{/*
Labels of every object of the release.
*/}}
{{- define "adobe-credential-operator.labels" -}}
helm.sh/chart: {{ include "adobe-credential-operator.chart" . }}
{{ include "adobe-credential-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: adobe-credential-operator
{{- end }}

{{/*
The ServiceAccount the operator runs as.
*/}}
{{- define "adobe-credential-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "adobe-credential-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
The container image: repository@digest when a digest is set, else repository:tag (default tag:
the chart's appVersion).
*/}}
{{- define "adobe-credential-operator.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/*
The leader-election Lease: one per release, so that two releases never share a leader.
*/}}
{{- define "adobe-credential-operator.leaseName" -}}
{{- include "adobe-credential-operator.fullname" . }}
{{- end }}

{{/*
Where the extra CA bundle is mounted.
*/}}
{{- define "adobe-credential-operator.extraCADir" -}}
/etc/adobe-credential-operator/extra-ca
{{- end }}

{{/*
Combinations of values that the schema cannot express; rendered (as nothing) by the Deployment.
*/}}
{{- define "adobe-credential-operator.validate" -}}
{{- if and .Values.extraCA.configMap .Values.extraCA.secret }}
{{- fail "extraCA: set either configMap or secret, not both" }}
{{- end }}
{{- if and (gt (int .Values.replicaCount) 1) (not .Values.leaderElection.enabled) }}
{{- fail "replicaCount > 1 needs leaderElection.enabled=true, otherwise every replica mints tokens" }}
{{- end }}
{{- if and .Values.serviceMonitor.enabled (not .Values.metrics.service.enabled) }}
{{- fail "serviceMonitor.enabled needs metrics.service.enabled=true (the ServiceMonitor selects that Service)" }}
{{- end }}
{{- end }}

{{/*
The RBAC rules for serving AdobeCredentials, identical in the cluster-wide ClusterRole and in
each namespace's Role. No delete verb anywhere: the operator never deletes anything; target
Secrets it owns are removed by the garbage collector through their ownerReference.
*/}}
{{- define "adobe-credential-operator.rules" -}}
# Watch AdobeCredentials: the operator's input.
- apiGroups: ["credentials.adobe-operator.io"]
  resources: ["adobecredentials"]
  verbs: ["get", "list", "watch"]
# Report Ready, expiry and failures in the status subresource (server-side apply, a patch).
- apiGroups: ["credentials.adobe-operator.io"]
  resources: ["adobecredentials/status"]
  verbs: ["get", "patch"]
# get: read the source Secret a credential references (client ID/secret, key, user/password).
# list/watch: notice source and target Secret changes (metadata-only watch).
# create/patch/update: write target Secrets and the operator's refresh-state Secrets with
# server-side apply; an apply that creates the Secret is authorised as create.
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get", "list", "watch", "create", "patch"]
# Publish Events on mints, rotations and failures; repeated Events are patched (counted).
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- if .Values.rolloutRestart.enabled }}
# Restart the workloads named in rolloutRestartTargets after a token change, by patching the
# restart annotation of their pod template (like `kubectl rollout restart`).
- apiGroups: ["apps"]
  resources: ["deployments", "statefulsets", "daemonsets"]
  verbs: ["get", "patch"]
{{- end }}
{{- if .Values.clientSecretRotation.enabled }}
# Client secret rotation: write the new client secret into a credential's source Secret (and the
# previous one under its secondary key) with an update conditioned on the resourceVersion read,
# so an edit made in between is never overwritten. RBAC cannot tell source from other Secrets by
# name; the operator updates no other Secret (targets and its own state use server-side apply).
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["update"]
# Hold a rotating credential with a finalizer (a patch of metadata.finalizers) until a rotation in
# progress is wound down: a deleted credential never leaves a secret at Adobe that nobody holds.
- apiGroups: ["credentials.adobe-operator.io"]
  resources: ["adobecredentials"]
  verbs: ["patch"]
{{- end }}
{{- end }}
