#!/usr/bin/env bash
# The device side of bench/gpu/prepare.sh: stores each carried part of the CUDA build outside the
# working tree (the machine keeps it while warm); once all four are there and `.gpu/run` came
# along, assembles the library, lays it out where `sluice setup --cuda` would (the NVIDIA
# libraries linked from the image's own Python), runs `evaluate` on the CUDA provider and
# compares its predictions with the CPU run's. Results in $OUT.
set -uo pipefail
store=/root/sluice-gpu
mkdir -p "$store" "${OUT:-/tmp/out}"
out=${OUT:-/tmp/out}
for p in .gpu/part-a?; do [ -f "$p" ] && cp "$p" "$store/" && echo "stored $p"; done
ls -la "$store"
if [ ! -d .gpu/run ] || [ "$(ls "$store"/part-a? 2>/dev/null | wc -l)" != 4 ]; then
    echo "waiting for more parts"; exit 0
fi
set -e
nvidia-smi -L
cat "$store"/part-aa "$store"/part-ab "$store"/part-ac "$store"/part-ad > "$store/ort.tar.xz"
echo "$(cat .gpu/run/ort.sha256)  $store/ort.tar.xz" | sha256sum -c -
cache=$store/cache
lib=$cache/onnxruntime-gpu/$(sed -n 's/^onnxruntime-gpu==//p' stages/python/requirements-ort-cuda.txt)
mkdir -p "$lib/onnxruntime/capi"
xz -dc "$store/ort.tar.xz" | tar -C "$lib/onnxruntime/capi" -xf -
# The image's NVIDIA wheels, whatever their folder layout, mirrored into the one
# `pip install --target` of requirements-ort-cuda.txt gives (nvidia/cu13/lib, nvidia/cudnn/lib);
# whole folders, so that libraries found next to another ($ORIGIN) are there too.
python3 -c 'import nvidia; print("\n".join(nvidia.__path__))' > "$out/nvidia-paths.txt"
cat "$out/nvidia-paths.txt"
mkdir -p "$lib/nvidia/cu13/lib" "$lib/nvidia/cudnn/lib"
while read -r dir; do
    find "$dir" -name 'lib*.so*' -type f -print
done < "$out/nvidia-paths.txt" | sort > "$out/nvidia-libs.txt"
while read -r f; do
    case "$(basename "$f")" in
        libcudnn*) ln -sf "$f" "$lib/nvidia/cudnn/lib/" ;;
        *) ln -sf "$f" "$lib/nvidia/cu13/lib/" ;;
    esac
done < "$out/nvidia-libs.txt"
cp stages/python/requirements-ort-cuda.txt "$lib/.sluice-ready"
xz -dc .gpu/run/sluice.xz > "$store/sluice" && chmod +x "$store/sluice"
rm -rf "$store/ws" && cp -r .gpu/run/ws "$store/ws"
cd "$store/ws"
set +e
SLUICE_CACHE_DIR=$cache "$store/sluice" run -v 2>&1 | tee "$out/evaluate.log"
rc=${PIPESTATUS[0]}
set -e
cp out/metrics.json out/predictions.csv "$out/" 2>/dev/null || true
if [ ! -f out/predictions.csv ]; then
    echo "GPU CHECK FAILED: evaluate wrote no predictions (exit $rc); see evaluate.log" | tee "$out/compare.txt"
    exit 1
fi
python3 - "$OLDPWD/.gpu/run/cpu-predictions.csv" out/predictions.csv out/metrics.json <<'PY' | tee "$out/compare.txt"
import csv, json, sys
cpu = list(csv.DictReader(open(sys.argv[1])))
gpu = list(csv.DictReader(open(sys.argv[2])))
m = json.load(open(sys.argv[3]))
keys = [k for k in cpu[0] if k.startswith("p_")]
diff = max(abs(float(a[k]) - float(b[k])) for a, b in zip(cpu, gpu) for k in keys)
same = sum(a["predicted"] == b["predicted"] for a, b in zip(cpu, gpu))
print(f"provider {m.get('provider')}; rows {len(gpu)} (cpu {len(cpu)}); same class {same}/{len(cpu)}; max |p_gpu - p_cpu| {diff:.2e}")
ok = m.get("provider") == "CUDAExecutionProvider" and len(cpu) == len(gpu) == same and diff < 1e-4
print("GPU CHECK", "PASSED" if ok else "FAILED")
sys.exit(0 if ok else 1)
PY
exit $rc
