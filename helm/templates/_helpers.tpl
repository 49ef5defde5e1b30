{{/*
Standard names and labels (helm create conventions) and the per-accelerator defaults every template uses.
*/}}

{{- define "whisper.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Object name: fullnameOverride, else the release name when it contains the chart name, else release-chart. */}}
{{- define "whisper.fullname" -}}
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

{{- define "whisper.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "whisper.selectorLabels" -}}
app.kubernetes.io/name: {{ include "whisper.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "whisper.labels" -}}
helm.sh/chart: {{ include "whisper.chart" . }}
{{ include "whisper.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: training
app.kubernetes.io/part-of: whisper-k8s
{{- end }}

{{/* Accelerators (= training processes) per node: the value, else 8 for ascend/nvidia and 1 for cpu. */}}
{{- define "whisper.perNode" -}}
{{- $a := .Values.accelerator }}
{{- if $a.perNode }}{{ int64 $a.perNode }}{{ else if eq $a.type "cpu" }}1{{ else }}8{{ end }}
{{- end }}

{{/* Extended resource name per node; none for cpu. */}}
{{- define "whisper.resourceName" -}}
{{- $a := .Values.accelerator }}
{{- if $a.resourceName }}{{ $a.resourceName }}
{{- else if eq $a.type "ascend" }}huawei.com/Ascend910
{{- else if eq $a.type "nvidia" }}nvidia.com/gpu
{{- end }}
{{- end }}

{{/* The trainer's --device for the accelerator type. */}}
{{- define "whisper.device" -}}
{{- get (dict "ascend" "npu" "nvidia" "cuda" "cpu" "cpu") .Values.accelerator.type }}
{{- end }}

{{/* torch.distributed backend: the value, else hccl / nccl / gloo. */}}
{{- define "whisper.distBackend" -}}
{{- default (get (dict "ascend" "hccl" "nvidia" "nccl" "cpu" "gloo") .Values.accelerator.type) .Values.accelerator.distBackend }}
{{- end }}

{{- define "whisper.image" -}}
{{- $tag := default (printf "%s-%s" .Chart.AppVersion .Values.accelerator.type) .Values.image.tag }}
{{- printf "%s:%s" .Values.image.repository $tag }}
{{- end }}

{{/* Name of the ConfigMap holding model.json and data.json. */}}
{{- define "whisper.configName" -}}
{{- printf "%s-config" (include "whisper.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Name of a claim created by the chart for volume $key (dataset, models, outputs). */}}
{{- define "whisper.claimName" -}}
{{- $ctx := index . 0 }}{{ $key := index . 1 }}
{{- $vol := index $ctx.Values.storage $key }}
{{- if eq $vol.type "existingClaim" }}{{ $vol.existingClaim }}
{{- else }}{{ printf "%s-%s" (include "whisper.fullname" $ctx) $key | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{/* Volumes the pods mount: dataset and outputs always, models only when a pretrained model is converted. */}}
{{- define "whisper.volumeKeys" -}}
{{- if .Values.model.pretrained.enabled }}dataset,models,outputs{{ else }}dataset,outputs{{ end }}
{{- end }}

{{/* Name of the gang PodGroup. */}}
{{- define "whisper.podGroupName" -}}
{{- include "whisper.fullname" . }}
{{- end }}

{{/* Scheduler: the value, else volcano / scheduler-plugins-scheduler for gang scheduling, else none (default scheduler). */}}
{{- define "whisper.schedulerName" -}}
{{- $s := .Values.scheduling }}
{{- if $s.schedulerName }}{{ $s.schedulerName }}
{{- else if eq $s.gang "volcano" }}volcano
{{- else if eq $s.gang "coscheduling" }}scheduler-plugins-scheduler
{{- end }}
{{- end }}

{{/* model.json: the preset merged with model.overrides; ckpt_path points to the converted weights or is empty. */}}
{{- define "whisper.modelJson" -}}
{{- $preset := .Files.Get (printf "files/model-presets/%s.json" .Values.model.preset) | fromJson }}
{{- $model := mergeOverwrite $preset (deepCopy .Values.model.overrides) }}
{{- $_ := set $model "ckpt_path" (ternary "/outputs/pretrained/whisper.pth" "" .Values.model.pretrained.enabled) }}
{{- toPrettyJson $model }}
{{- end }}

{{/* The processor folder the job uses: the value, else the one the init container writes. */}}
{{- define "whisper.processorPath" -}}
{{- default "/outputs/processor" .Values.data.processor }}
{{- end }}

{{/* data.json in MindSpeed-MM's shape, reading Common Voice from /data. */}}
{{- define "whisper.dataJson" -}}
{{- $d := .Values.data }}
{{- $processor := include "whisper.processorPath" . }}
{{- $data := dict
  "dataset_param" (dict
    "dataset_type" "audio"
    "basic_parameters" (dict "dataset_name_or_path" "/data" "language" $d.language)
    "preprocess_parameters" (dict "processor_name_or_path" $processor "language" $d.whisperLanguage "task" $d.task))
  "dataloader_param" (dict
    "dataloader_mode" "sampler" "shuffle" true "drop_last" false "pin_memory" true
    "collate_param" (dict "model_name" "whisper" "processor_name_or_path" $processor "language" $d.whisperLanguage "task" $d.task)) }}
{{- toPrettyJson $data }}
{{- end }}

{{/*
Checks across fields that values.schema.json cannot express; every job template includes it first, so a bad
combination fails at `helm template` time naming the fields.
*/}}
{{- define "whisper.validate" -}}
{{- $t := .Values.training }}
{{- $world := mul (int64 .Values.nodes) (int64 (include "whisper.perNode" .)) }}
{{- $step := mul (int64 $t.microBatchSize) $world }}
{{- if and $t.globalBatchSize (ne 0 (int64 (mod (int64 $t.globalBatchSize) $step))) }}
{{- fail (printf "training.globalBatchSize %d must be a multiple of training.microBatchSize x nodes x accelerator.perNode = %d" (int64 $t.globalBatchSize) $step) }}
{{- end }}
{{- if and (eq .Values.engine "mindspeed-mm") (eq .Values.accelerator.type "cpu") }}
{{- fail "engine mindspeed-mm needs accelerator.type ascend or nvidia (MindSpeed-MM does not train on CPU); use engine native" }}
{{- end }}
{{- if and (eq .Values.engine "mindspeed-mm") (eq $t.parallel "fsdp") }}
{{- fail "training.parallel fsdp is for engine native; engine mindspeed-mm always uses Megatron's distributed optimizer" }}
{{- end }}
{{- end }}
