#!/bin/bash
# The GPU check a session runs when it is lent a machine with an NVIDIA GPU and no network (the
# device tool): `bash tools/gpu_check.sh prepare` here, then `bash tools/gpu_check.sh` there, with
# .gpu carried. prepare copies the pure-Python packages such a machine may lack (Hydra, OmegaConf,
# ANTLR) and the real MNIST (gzipped) into .gpu/, which git ignores. The run sets them up, then:
# benchmarks/gpu.py, the loop overhead on CUDA, real runs through every CUDA path (bf16, fp16 with
# its scaler, channels_last, compile, resume on the GPU, the GPU's checkpoint scored on the CPU,
# torchrun with more processes than GPUs), and the suite's training, resume and checkpoint tests
# with CUDA as the default device. What it prints goes to $OUT as well.
set -u
if [ "${1:-}" = prepare ]; then
    site=$(python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
    mkdir -p .gpu/site .gpu/mnist
    grep -qx '/.gpu/' .git/info/exclude || echo '/.gpu/' >> .git/info/exclude
    for name in hydra omegaconf antlr4; do cp -r "$site/$name" .gpu/site/; done
    for file in ../shared/data/MNIST/raw/*-ubyte; do gzip -c "$file" > ".gpu/mnist/$(basename "$file").gz"; done
    du -sh .gpu
    exit 0
fi
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD/src:$PWD/.gpu/site:$PWD
OUT=${OUT:-/tmp/gpu_check}
mkdir -p "$OUT" ../shared/data/MNIST/raw
for file in .gpu/mnist/*.gz; do gunzip -c "$file" > "../shared/data/MNIST/raw/$(basename "$file" .gz)"; done
bin=$(dirname "$(command -v python3)")
for pair in dlrun:main dlrun-eval:eval_main dlrun-predict:predict_main; do
    printf '#!/usr/bin/env python3\nimport sys\nfrom dlrun.cli import %s\nsys.exit(%s())\n' "${pair#*:}" "${pair#*:}" > "$bin/${pair%%:*}"
    chmod +x "$bin/${pair%%:*}"
done
nvidia-smi -L
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())"
data=../shared/data
run() {
    local name=$1; shift
    echo "--- $name: dlrun $*"
    timeout 150 dlrun "$@" dataset.root=$data hydra.run.dir=/tmp/gpu_runs/$name terminal.progress=off 2>&1 | tail -3
}
{
    echo "== benchmarks/gpu.py"; timeout 150 python3 -m benchmarks.gpu --epochs 3
    echo "== loop overhead on cuda"; timeout 170 python3 -m benchmarks.loop_overhead --device cuda --pairs 3 --threads 4
    echo "== runs"
    run fp32 experiment=mnist_lenet trainer.epochs=2
    run bf16 experiment=mnist_lenet trainer.epochs=2 trainer.precision=bf16
    run fp16 experiment=mnist_lenet trainer.epochs=2 trainer.precision=16
    run channels_last experiment=mnist_lenet trainer.epochs=1 trainer.channels_last=true
    run compiled experiment=mnist_lenet trainer.epochs=2 trainer.compile=true
    run resumed experiment=mnist_lenet trainer.epochs=1
    run resumed experiment=mnist_lenet trainer.epochs=2 trainer.resume=/tmp/gpu_runs/resumed/checkpoints/last.pt trainer.resume_force=true
    timeout 120 dlrun-eval ckpt=/tmp/gpu_runs/resumed/checkpoints/best.pt device=cpu dataset.root=$data 2>&1 | tail -2
    timeout 120 torchrun --nproc_per_node=2 --no-python dlrun experiment=mnist_lenet trainer.epochs=1 dataset.root=$data hydra.run.dir=/tmp/gpu_runs/ddp 2>&1 | grep "dlrun: error" | head -2
} 2>&1 | tee "$OUT/gpu_check.txt"
timeout 200 python3 -m pytest -q -p no:cacheprovider -n 12 -rfE tests/test_resume.py tests/test_training.py \
    tests/test_checkpoint.py tests/test_outsiders_code.py tests/test_distributed.py 2>&1 | tail -40 | tee "$OUT/suite.txt"
