"""Stage env: the machine and the software the campaign's figures come from (beside provenance.json)."""

import shutil
import subprocess
from importlib.metadata import PackageNotFoundError, version

from scripts.campaign.common import Box, Context, StageResult
from src.markdown import markdown_table

BOX = Box(gpu=20, quick=30, min_gpu=5, min_quick=5)


def run(ctx: Context) -> StageResult:
    import torch

    from src import provenance

    rec = provenance.record()
    rec.pop("_diff")
    info = {**rec["machine"], **rec["environment"]}
    for name in ("torchmetrics", "jsonargparse", "wandb", "timm", "triton"):
        try:
            info[name] = version(name)
        except PackageNotFoundError:
            info[name] = None
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        info |= {"gpu_memory_gib": round(p.total_memory / 2**30, 1), "sms": p.multi_processor_count}
        smi = shutil.which("nvidia-smi")
        if smi:
            q = "--query-gpu=name,driver_version,memory.total,clocks.max.sm,power.limit"
            out = subprocess.run([smi, q, "--format=csv,noheader"], capture_output=True, text=True, timeout=20)
            info["nvidia_smi"] = out.stdout.strip()
    return info, [markdown_table(["key", "value"], [[k, v] for k, v in info.items()])]
