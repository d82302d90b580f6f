#!/usr/bin/env bash
# Prepares the GPU check of `evaluate` on ONNX Runtime's CUDA provider (issue 5) for the lent
# device machine, which reaches no package registry and takes at most 64 MiB per call: the
# CUDA build's three libraries (about 194 MB as .tar.xz) travel in four parts, one per call,
# and the last call also carries a stripped sluice and a small evaluate workspace. The NVIDIA
# CUDA 13 / cuDNN 9 libraries are not carried: the device image's Python has them (torch cu130).
#
#   bash bench/gpu/prepare.sh            # here, once (about 5 min: download, xz, a CPU iris run)
#   then, on the device, four calls in a row (the machine stays warm for 30 s between calls):
#     run(command="bash bench/gpu/device.sh", carry=[".gpu/part-aa"])
#     run(command="bash bench/gpu/device.sh", carry=[".gpu/part-ab"])
#     run(command="bash bench/gpu/device.sh", carry=[".gpu/part-ac"])
#     run(command="bash bench/gpu/device.sh", carry=[".gpu/part-ad", ".gpu/run"])
#
# The training worker's CUDA path cannot be checked this way: onnxruntime-training's only CUDA
# build (1.19.2) needs CUDA 11.8 and cuDNN 8, about 2 GB of libraries the device image lacks.
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$PWD
grep -qx '/.gpu/' .git/info/exclude 2>/dev/null || echo '/.gpu/' >> .git/info/exclude
rm -rf .gpu && mkdir -p .gpu/run .gpu/dl
version=$(sed -n 's/^onnxruntime-gpu==//p' stages/python/requirements-ort-cuda.txt)

echo "== onnxruntime-gpu $version from PyPI"
# Only the shared libraries are used, and they are the same in every Python's wheel.
python3 -m pip download -q --no-deps "onnxruntime-gpu==$version" -d .gpu/dl
capi=onnxruntime/capi
(cd .gpu/dl && python3 -m zipfile -e onnxruntime_gpu-*.whl x >/dev/null)
tar -C ".gpu/dl/x/$capi" -cf - "libonnxruntime.so.$version" libonnxruntime_providers_cuda.so \
    libonnxruntime_providers_shared.so | xz -T0 -9 > .gpu/ort.tar.xz
split -n 4 .gpu/ort.tar.xz .gpu/part-     # part-aa .. part-ad, about 49 MB each
sha256sum .gpu/ort.tar.xz | cut -d' ' -f1 > .gpu/run/ort.sha256
rm -rf .gpu/dl .gpu/ort.tar.xz

echo "== sluice (release, stripped)"
cargo build --release --quiet
strip -o .gpu/run/sluice target/release/sluice
xz -T0 -9 .gpu/run/sluice

echo "== the CPU reference: iris trained and evaluated here"
ws=$(mktemp -d)
mkdir -p "$ws/examples/data" "$ws/pipelines"
cp examples/data/iris.csv "$ws/examples/data/"
cp pipelines/iris.yaml "$ws/pipelines/"
(cd "$ws" && "$root/target/release/sluice" run pipelines/iris.yaml -q)
mkdir -p .gpu/run/ws/in
cp -r "$ws/out/iris/model.onnx" "$ws/out/iris/preprocess.json" .gpu/run/ws/in/
cp -r "$(dirname "$(find "$ws/out/iris" -name features.npy -path '*test*' | head -1)")" .gpu/run/ws/in/test
cp "$ws/out/iris/predictions.csv" .gpu/run/cpu-predictions.csv
rm -rf "$ws"
cat > .gpu/run/ws/sluice.yaml <<'YAML'
name: gpucheck
stages:
  evaluate:
    uses: evaluate
    resources: {gpus: 1}
    inputs: {model: in/model.onnx, test: in/test, preprocess: in/preprocess.json}
    outputs: {metrics: out/metrics.json, predictions: out/predictions.csv, plots: out/plots}
    with: {device: cuda}
YAML
du -ch .gpu/part-* .gpu/run | tail -1
ls -la .gpu .gpu/run
