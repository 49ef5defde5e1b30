{{/*
The pod template of a training node, as named templates shared by every job kind the chart renders
(PyTorchJob today; a TrainJob/TrainingRuntime reuses the same pieces). Each template takes the root
context `.` unless it says otherwise; "whisper.pod.spec" and "whisper.pod.container" take a dict with
`ctx` (the root context), `containerName` and `ports` (a list of ContainerPort dicts).
*/}}

{{/*
Launch wrapper (sh -c, run with the argv as "$@"): sources the CANN environment when the image has it
(a pod `command` bypasses the image's ENTRYPOINT), exports NODE_RANK from the operator's PET_NODE_RANK so the
training code sees it (MASTER_ADDR/MASTER_PORT/RANK come from the operator; torchrun reads PET_* itself),
then runs the launcher and stays as the container's main process: a SIGTERM (pod deletion, eviction) is passed
to the launcher's children, the training processes, which checkpoint and exit, and not to torchrun, which
would SIGKILL them 30 s later whatever the grace period (torch < 2.12). The exit code is then 143, so the
operator restarts (and the trainer resumes) rather than marking the job done; otherwise it is the launcher's.
*/}}
{{- define "whisper.launchScript" -}}
set -e
if [ -f /usr/local/Ascend/ascend-toolkit/set_env.sh ]; then . /usr/local/Ascend/ascend-toolkit/set_env.sh; fi
export NODE_RANK="${NODE_RANK:-${PET_NODE_RANK:-0}}"
set +e
"$@" &
launcher=$!
stopped=0
stop_workers() {
  stopped=1
  for proc in /proc/[0-9]*; do
    if [ "$(sed -n 's/^PPid:[[:space:]]*//p' "$proc/status" 2>/dev/null)" = "$launcher" ]; then kill -TERM "${proc#/proc/}" 2>/dev/null; fi
  done
}
trap stop_workers TERM INT
wait "$launcher"
code=$?
while kill -0 "$launcher" 2>/dev/null; do wait "$launcher"; code=$?; done
if [ "$stopped" = 1 ]; then exit 143; fi
exit "$code"
{{- end }}

{{/* The container command: the launch wrapper, run by sh with the training command line as "$@". */}}
{{- define "whisper.launchCommand" -}}
- /bin/sh
- -c
- {{ include "whisper.launchScript" . | quote }}
- whisper-launch
{{- end }}

{{/* The training command line (torchrun + the engine + its flags) as a YAML list. */}}
{{- define "whisper.trainArgs" -}}
{{- $t := .Values.training -}}
- torchrun
{{- if eq .Values.engine "native" }}
- -m
- whisper_trainer
{{- else }}
- {{ printf "%s/pretrain_whisper.py" .Values.mindspeedMM.path }}
{{- end }}
- --mm-model
- /config/model.json
- --mm-data
- /config/data.json
- --save
- /outputs/checkpoints
- --load
- /outputs/checkpoints
- --micro-batch-size
- {{ int64 $t.microBatchSize | quote }}
{{- if $t.globalBatchSize }}
- --global-batch-size
- {{ int64 $t.globalBatchSize | quote }}
{{- end }}
- --lr
- {{ $t.lr | toString | quote }}
{{- if not (kindIs "invalid" $t.minLr) }}
- --min-lr
- {{ $t.minLr | toString | quote }}
{{- end }}
{{- if $t.warmupIters }}
- --lr-warmup-iters
- {{ int64 $t.warmupIters | quote }}
{{- end }}
{{- if $t.decayStyle }}
- --lr-decay-style
- {{ $t.decayStyle }}
{{- end }}
- --train-iters
- {{ int64 $t.trainIters | quote }}
- --weight-decay
- {{ $t.weightDecay | toString | quote }}
- --clip-grad
- {{ default 0 $t.clipGrad | toString | quote }}
{{- if $t.bf16 }}
- --bf16
{{- end }}
- --save-interval
- {{ int64 $t.saveInterval | quote }}
- --log-interval
- {{ int64 $t.logInterval | quote }}
- --num-workers
- {{ int64 $t.numWorkers | quote }}
- --seed
- {{ int64 $t.seed | quote }}
{{- if eq .Values.engine "native" }}
- --parallel
- {{ $t.parallel }}
- --keep-checkpoints
- {{ int64 $t.keepCheckpoints | quote }}
- --metrics-file
- /outputs/metrics.jsonl
- --device
- {{ include "whisper.device" . }}
- --split
- {{ .Values.data.split | quote }}
{{- else }}
{{- /* The seed's pretrain_whisper.sh arguments that the values above do not cover; the two lengths come
       from model.json (448 and 1500 for every released Whisper size), which Megatron checks them against. */}}
{{- $model := include "whisper.modelJson" . | fromJson }}
- --tensor-model-parallel-size
- "1"
- --pipeline-model-parallel-size
- "1"
- --context-parallel-size
- "1"
- --seq-length
- {{ int64 $model.max_target_positions | quote }}
- --max-position-embeddings
- {{ int64 $model.max_source_positions | quote }}
- --use-distributed-optimizer
- --overlap-grad-reduce
- --overlap-param-gather
{{- range .Values.mindspeedMM.extraArgs }}
- {{ . | quote }}
{{- end }}
{{- end }}
{{- range $t.extraArgs }}
- {{ . | quote }}
{{- end }}
{{- end }}

{{/* Environment of the training container (the operator appends MASTER_ADDR, MASTER_PORT, RANK and the PET_ variables). */}}
{{- define "whisper.env" -}}
- name: HOME
  value: /home/whisper
- name: PYTHONDONTWRITEBYTECODE
  value: "1"
- name: HF_HUB_OFFLINE
  value: "1"
- name: TRANSFORMERS_OFFLINE
  value: "1"
- name: TOKENIZERS_PARALLELISM
  value: {{ .Values.ascendEnv.TOKENIZERS_PARALLELISM | quote }}
- name: WHISPER_DIST_BACKEND
  value: {{ include "whisper.distBackend" . | quote }}
{{- /* torchrun SIGKILLs its workers 30 s after forwarding SIGTERM; torch >= 2.12 waits this long instead, so
the trainer's SIGTERM checkpoint gets the pod's whole grace period (older torch ignores the variable). */}}
- name: TORCH_ELASTIC_SHUTDOWN_TIMEOUT
  value: {{ int64 .Values.terminationGracePeriodSeconds | quote }}
{{- if eq .Values.accelerator.type "ascend" }}
{{- range $name, $value := omit .Values.ascendEnv "TOKENIZERS_PARALLELISM" }}
- name: {{ $name }}
  {{- /* YAML numbers arrive as float64: print integers as integers (10000000, not 1e+07). */}}
  value: {{ ternary (int64 $value | toString) (toString $value) (kindIs "float64" $value) | quote }}
{{- end }}
- name: NPUS_PER_NODE
  value: {{ include "whisper.perNode" . | quote }}
{{- if .Values.accelerator.hostDriver.enabled }}
- name: LD_LIBRARY_PATH
  value: {{ .Values.accelerator.hostDriver.libraryPath | quote }}
{{- end }}
{{- end }}
{{- if eq .Values.engine "mindspeed-mm" }}
- name: CUDA_DEVICE_MAX_CONNECTIONS
  value: "1"
- name: PYTHONPATH
  value: {{ .Values.mindspeedMM.path | quote }}
{{- end }}
{{- with .Values.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Volume mounts shared by the training and init containers. */}}
{{- define "whisper.volumeMounts" -}}
- name: config
  mountPath: /config
  readOnly: true
{{- range $key := splitList "," (include "whisper.volumeKeys" .) }}
{{- $vol := index $.Values.storage $key }}
- name: {{ $key }}
  mountPath: {{ get (dict "dataset" "/data" "models" "/models" "outputs" "/outputs") $key }}
  {{- if $vol.readOnly }}
  readOnly: true
  {{- end }}
{{- end }}
- name: shm
  mountPath: /dev/shm
- name: tmp
  mountPath: /tmp
- name: home
  mountPath: /home/whisper
{{- if and (eq .Values.accelerator.type "ascend") .Values.accelerator.hostDriver.enabled }}
{{- range $i, $path := .Values.accelerator.hostDriver.paths }}
- name: {{ printf "ascend-driver-%d" $i }}
  mountPath: {{ $path }}
  readOnly: true
{{- end }}
{{- end }}
{{- end }}

{{/* Pod volumes: config, data volumes (claim or hostPath), memory-backed /dev/shm, writable emptyDirs, driver. */}}
{{- define "whisper.volumes" -}}
- name: config
  configMap:
    name: {{ include "whisper.configName" . }}
{{- range $key := splitList "," (include "whisper.volumeKeys" .) }}
{{- $vol := index $.Values.storage $key }}
- name: {{ $key }}
  {{- if eq $vol.type "hostPath" }}
  hostPath:
    path: {{ $vol.hostPath }}
    type: {{ ternary "DirectoryOrCreate" "Directory" (eq $key "outputs") }}
  {{- else }}
  persistentVolumeClaim:
    claimName: {{ include "whisper.claimName" (list $ $key) }}
    {{- if $vol.readOnly }}
    readOnly: true
    {{- end }}
  {{- end }}
{{- end }}
- name: shm
  emptyDir:
    medium: Memory
    sizeLimit: {{ .Values.storage.shmSizeLimit }}
- name: tmp
  emptyDir: {}
- name: home
  emptyDir: {}
{{- if and (eq .Values.accelerator.type "ascend") .Values.accelerator.hostDriver.enabled }}
{{- range $i, $path := .Values.accelerator.hostDriver.paths }}
- name: {{ printf "ascend-driver-%d" $i }}
  hostPath:
    path: {{ $path }}
{{- end }}
{{- end }}
{{- end }}

{{/* Container security: no privilege escalation, every capability dropped, read-only root, RuntimeDefault seccomp. */}}
{{- define "whisper.containerSecurityContext" -}}
allowPrivilegeEscalation: false
privileged: false
readOnlyRootFilesystem: {{ .Values.security.readOnlyRootFilesystem }}
runAsNonRoot: true
capabilities:
  drop: ["ALL"]
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/* Pod security: non-root user; the accelerator driver's group (Ascend HwHiAiUser) as a supplemental group. */}}
{{- define "whisper.podSecurityContext" -}}
{{- $s := .Values.security -}}
runAsNonRoot: true
runAsUser: {{ int64 $s.runAsUser }}
runAsGroup: {{ int64 $s.runAsGroup }}
{{- if not (kindIs "invalid" $s.fsGroup) }}
fsGroup: {{ int64 $s.fsGroup }}
fsGroupChangePolicy: OnRootMismatch
{{- end }}
{{- if and (ne .Values.accelerator.type "cpu") (not (kindIs "invalid" .Values.accelerator.driverGroup)) }}
supplementalGroups: [{{ int64 .Values.accelerator.driverGroup }}]
{{- end }}
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/* CPU and memory per node (requests = limits), plus the accelerators on the training container. */}}
{{- define "whisper.resources" -}}
{{- $ctx := index . 0 }}{{ $withAccelerators := index . 1 }}
{{- $r := $ctx.Values.resources }}
{{- $cpu := $r.cpuPerNode }}
{{- if kindIs "invalid" $cpu }}
{{- $cpu = mul (int64 (include "whisper.perNode" $ctx)) (add1 (int64 $ctx.Values.training.numWorkers)) }}
{{- end }}
{{- $res := dict "cpu" (toString $cpu) "memory" (toString $r.memoryPerNode) }}
{{- $accel := include "whisper.resourceName" $ctx }}
{{- if and $withAccelerators $accel }}
{{- $_ := set $res $accel (include "whisper.perNode" $ctx) }}
{{- end -}}
requests:
  {{- range $k, $v := $res }}
  {{ $k }}: {{ $v | quote }}
  {{- end }}
limits:
  {{- range $k, $v := $res }}
  {{ $k }}: {{ $v | quote }}
  {{- end }}
{{- end }}

{{/*
Init containers, run in every pod (the TrainJob variant has one template for all nodes): the offline processor
when none is given (`assets processor` is idempotent and writes atomically), and the HF -> MindSpeed-MM
conversion of the pretrained weights, skipped when the converted file is already there.
*/}}
{{- define "whisper.initContainers" -}}
{{- $steps := list }}
{{- if not .Values.data.processor }}
{{- $steps = append $steps (dict "name" "processor" "script" "python -m whisper_k8s assets processor --out /outputs/processor") }}
{{- end }}
{{- if .Values.model.pretrained.enabled }}
{{- $src := printf "/models/%s" (trimSuffix "/" .Values.model.pretrained.path) }}
{{- $steps = append $steps (dict "name" "convert-pretrained" "script" (printf "test -s /outputs/pretrained/whisper.pth || python -m whisper_k8s convert hf-to-mm %s /outputs/pretrained/whisper.pth" $src)) }}
{{- end }}
{{- range $steps }}
- name: {{ .name }}
  image: {{ include "whisper.image" $ }}
  imagePullPolicy: {{ $.Values.image.pullPolicy }}
  command: ["/bin/sh", "-c", {{ .script | quote }}]
  workingDir: /tmp
  env:
    {{- include "whisper.env" $ | nindent 4 }}
  resources:
    {{- include "whisper.resources" (list $ false) | nindent 4 }}
  securityContext:
    {{- include "whisper.containerSecurityContext" $ | nindent 4 }}
  volumeMounts:
    {{- include "whisper.volumeMounts" $ | nindent 4 }}
{{- end }}
{{- end }}

{{/*
The training container. Takes dict: ctx, containerName, ports, and withCommand (false when the job kind passes
the command itself, as a TrainJob's spec.trainer does).
*/}}
{{- define "whisper.pod.container" -}}
{{- $ctx := .ctx -}}
- name: {{ .containerName }}
  image: {{ include "whisper.image" $ctx }}
  imagePullPolicy: {{ $ctx.Values.image.pullPolicy }}
  {{- if .withCommand }}
  command:
    {{- include "whisper.launchCommand" $ctx | nindent 4 }}
  args:
    {{- include "whisper.trainArgs" $ctx | nindent 4 }}
  {{- end }}
  workingDir: /tmp
  {{- with .ports }}
  ports:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  env:
    {{- include "whisper.env" $ctx | nindent 4 }}
  {{- with $ctx.Values.extraEnvFrom }}
  envFrom:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  resources:
    {{- include "whisper.resources" (list $ctx true) | nindent 4 }}
  securityContext:
    {{- include "whisper.containerSecurityContext" $ctx | nindent 4 }}
  volumeMounts:
    {{- include "whisper.volumeMounts" $ctx | nindent 4 }}
{{- end }}

{{/*
Pod template metadata: labels, config checksum and, for a PodGroup this chart creates (PyTorchJob), the
coscheduling label or the Volcano annotation (Trainer v2 manages its PodGroups itself). Takes the root context.
*/}}
{{- define "whisper.pod.metadata" -}}
labels:
  {{- include "whisper.labels" . | nindent 2 }}
  {{- with .Values.podLabels }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
  {{- if and (eq .Values.operator "pytorchjob") (eq .Values.scheduling.gang "coscheduling") }}
  scheduling.x-k8s.io/pod-group: {{ include "whisper.podGroupName" . }}
  {{- end }}
annotations:
  checksum/config: {{ include (print $.Template.BasePath "/configmap.yaml") . | sha256sum }}
  {{- if and (eq .Values.operator "pytorchjob") (eq .Values.scheduling.gang "volcano") }}
  scheduling.k8s.io/group-name: {{ include "whisper.podGroupName" . }}
  {{- end }}
  {{- with .Values.podAnnotations }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
{{- end }}

{{/* The pod spec of a training node. Takes the dict of "whisper.pod.container". */}}
{{- define "whisper.pod.spec" -}}
{{- $ctx := .ctx }}
{{- $v := $ctx.Values -}}
# The trainer resumes from its last checkpoint, so a failed container is simply restarted.
restartPolicy: OnFailure
terminationGracePeriodSeconds: {{ int64 $v.terminationGracePeriodSeconds }}
enableServiceLinks: false
automountServiceAccountToken: false
{{- with $v.security.serviceAccountName }}
serviceAccountName: {{ . }}
{{- end }}
{{- with include "whisper.schedulerName" $ctx }}
schedulerName: {{ . }}
{{- end }}
{{- with $v.scheduling.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- if $v.security.hostNetwork }}
hostNetwork: true
dnsPolicy: ClusterFirstWithHostNet
{{- end }}
securityContext:
  {{- include "whisper.podSecurityContext" $ctx | nindent 2 }}
{{- with $v.accelerator.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $v.accelerator.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $v.scheduling.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $v.image.pullSecrets }}
imagePullSecrets:
  {{- range . }}
  - name: {{ . }}
  {{- end }}
{{- end }}
{{- with include "whisper.initContainers" $ctx }}
initContainers:
  {{- . | trim | nindent 2 }}
{{- end }}
containers:
  {{- include "whisper.pod.container" . | nindent 2 }}
volumes:
  {{- include "whisper.volumes" $ctx | nindent 2 }}
{{- end }}
