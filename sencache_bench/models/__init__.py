"""Model registry: registered names -> ModelEntry (lazy imports), families by pipeline class."""

from __future__ import annotations

from ..registry import Registry
from .base import Family, ModelEntry

MODELS: Registry[ModelEntry] = Registry("model", entry_points="sencache_bench.models")
for _name, _target, _aliases in [
    ("tiny-wan", "sencache_bench.models.wan:TINY_WAN", ()),
    ("tiny-wan22", "sencache_bench.models.wan:TINY_WAN22", ()),
    ("tiny-wan22-ti2v", "sencache_bench.models.wan:TINY_WAN22_TI2V", ()),
    ("tiny-wan-i2v", "sencache_bench.models.wan_i2v:TINY_WAN_I2V", ()),
    ("tiny-cogvideox", "sencache_bench.models.cogvideox:TINY_COGVIDEOX", ()),
    ("tiny-ltx", "sencache_bench.models.ltx:TINY_LTX", ()),
    ("tiny-hunyuanvideo", "sencache_bench.models.hunyuanvideo:TINY_HUNYUANVIDEO", ("tiny-hunyuan",)),
    ("tiny-opensora", "sencache_bench.models.opensora.family:TINY_OPENSORA", ()),
    ("tiny-hunyuanvideo15", "sencache_bench.models.hunyuanvideo15:TINY_HUNYUANVIDEO15", ()),
    ("tiny-hunyuanvideo15-i2v", "sencache_bench.models.hunyuanvideo15_i2v:TINY_HUNYUANVIDEO15_I2V", ()),
    ("bench-t2v", "sencache_bench.models.bench:BENCH_T2V", ()),
    ("wan2.1-t2v-1.3b", "sencache_bench.models.wan:WAN21_T2V_1_3B", ("wan-1.3b",)),
    ("wan2.1-t2v-14b", "sencache_bench.models.wan:WAN21_T2V_14B", ("wan-14b",)),
    ("wan2.2-t2v-a14b", "sencache_bench.models.wan:WAN22_T2V_A14B", ("wan2.2-a14b",)),
    ("wan2.2-ti2v-5b", "sencache_bench.models.wan:WAN22_TI2V_5B", ()),
    ("wan2.1-i2v-14b-480p", "sencache_bench.models.wan_i2v:WAN21_I2V_14B_480P", ("wan-i2v-14b",)),
    ("cogvideox-2b", "sencache_bench.models.cogvideox:COGVIDEOX_2B", ()),
    ("cogvideox-5b", "sencache_bench.models.cogvideox:COGVIDEOX_5B", ()),
    ("cogvideox1.5-5b", "sencache_bench.models.cogvideox:COGVIDEOX15_5B", ()),
    ("ltx-video", "sencache_bench.models.ltx:LTX_VIDEO", ("ltx-video-0.9.1",)),
    ("hunyuanvideo", "sencache_bench.models.hunyuanvideo:HUNYUANVIDEO_T2V", ("hunyuan-video",)),
    ("opensora-1.2", "sencache_bench.models.opensora.family:OPENSORA_1_2", ("open-sora-1.2",)),
    ("hunyuanvideo-1.5", "sencache_bench.models.hunyuanvideo15:HUNYUANVIDEO15_480P_T2V", ("hunyuanvideo-1.5-480p",)),
    ("hunyuanvideo-1.5-i2v", "sencache_bench.models.hunyuanvideo15_i2v:HUNYUANVIDEO15_480P_I2V",
     ("hunyuanvideo-1.5-480p-i2v",)),
]:
    MODELS.add(_name, _target, _aliases)

FAMILIES: Registry[Family] = Registry("model family")
for _name, _target in [
    ("wan", "sencache_bench.models.wan:WAN"),
    ("wan-i2v", "sencache_bench.models.wan_i2v:WAN_I2V"),
    ("wan-ti2v-i2v", "sencache_bench.models.wan_i2v:WAN_TI2V_I2V"),
    ("cogvideox", "sencache_bench.models.cogvideox:COGVIDEOX"),
    ("ltx", "sencache_bench.models.ltx:LTX"),
    ("hunyuanvideo", "sencache_bench.models.hunyuanvideo:HUNYUANVIDEO"),
    ("opensora", "sencache_bench.models.opensora.family:OPENSORA"),
    ("hunyuanvideo15", "sencache_bench.models.hunyuanvideo15:HUNYUANVIDEO15"),
    ("hunyuanvideo15-i2v", "sencache_bench.models.hunyuanvideo15_i2v:HUNYUANVIDEO15_I2V"),
]:
    FAMILIES.add(_name, _target)


def family_for_pipeline_class(class_name: str) -> Family | None:
    for name in FAMILIES:
        family = FAMILIES.get(name)
        if family.pipeline_class == class_name:
            return family
    return None
