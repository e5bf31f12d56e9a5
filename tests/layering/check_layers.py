#!/usr/bin/env python3
"""Checks that every #include in src/ and include/maskrcnn/ goes down the layers.

The layers (docs/design.md), bottom up, and what each may include besides itself:
  ground      src/common, maskrcnn/{types,config,error,profile,cpu_settings}.h
  checkpoint  src/io/checkpoint, maskrcnn/{checkpoint,pickle}.h           -> ground
  ops         src/ops, maskrcnn/ops.h                                     -> ground
  backend     src/backend/cpu (the CPU fast path)                         -> ops
  modeling    src/modeling, maskrcnn/model.h                              -> backend
  coco        src/io/coco, src/io/atomic_file, src/evaluation,
              maskrcnn/{coco,rle,coco_eval}.h                             -> ground
  api         src/image, src/api, maskrcnn/{image,results,model_info}.h   -> modeling, checkpoint, coco
  data        src/data                                                    -> api
  engine      src/engine, maskrcnn/{evaluator,trainer}.h                  -> data
  video       src/video, maskrcnn/{video,tracker}.h (video I/O, tracking)  -> api
  explain     src/explain, maskrcnn/explain.h (the stage-by-stage report)   -> api
  serve       src/serve (the HTTP model server)                           -> engine, explain
  top         tools, maskrcnn/maskrcnn.h                                  -> everything
Exits 1 listing each include that goes up or sideways.
"""
import pathlib
import re
import sys

BELOW = {
    "ground": set(),
    "checkpoint": {"ground"},
    "ops": {"ground"},
    "backend": {"ops", "ground"},
    "modeling": {"backend", "ops", "ground"},
    "coco": {"ground"},
    "api": {"modeling", "ops", "checkpoint", "coco", "ground"},
    "data": {"api", "modeling", "ops", "checkpoint", "coco", "ground"},
    "engine": {"data", "api", "modeling", "ops", "checkpoint", "coco", "ground"},
    "video": {"api", "modeling", "ops", "checkpoint", "coco", "ground"},
    "explain": {"api", "modeling", "ops", "checkpoint", "coco", "ground"},
    "serve": {"explain", "engine", "data", "api", "modeling", "ops", "backend", "checkpoint", "coco", "ground"},
}
PUBLIC = {
    "types.h": "ground", "config.h": "ground", "error.h": "ground", "profile.h": "ground",
    "cpu_settings.h": "ground", "trace.h": "ground", "checkpoint.h": "checkpoint", "pickle.h": "checkpoint",
    "ops.h": "ops", "model.h": "modeling", "coco.h": "coco", "rle.h": "coco",
    "coco_eval.h": "coco", "image.h": "api", "results.h": "api", "model_info.h": "api",
    "evaluator.h": "engine", "trainer.h": "engine",
    "video.h": "video", "tracker.h": "video", "explain.h": "explain", "maskrcnn.h": "top",
}
SOURCE = [  # longest prefix first
    ("io/checkpoint/", "checkpoint"), ("io/coco/", "coco"), ("io/atomic_file", "coco"),
    ("common/", "ground"), ("ops/", "ops"), ("backend/cpu/", "backend"),
    ("modeling/", "modeling"), ("evaluation/", "coco"), ("image/", "api"), ("api/", "api"),
    ("data/", "data"), ("engine/", "engine"), ("video/", "video"), ("explain/", "explain"), ("serve/", "serve"),
]


def layer_of_source(rel):
    for prefix, layer in SOURCE:
        if rel.startswith(prefix):
            return layer
    return None


def layer_of_include(name):
    if name.startswith("maskrcnn/"):
        return PUBLIC.get(name[len("maskrcnn/"):])
    return layer_of_source(name)


def main():
    root = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else pathlib.Path(__file__).resolve().parents[2])
    files = [(p, layer_of_source(str(p.relative_to(root / "src")))) for p in (root / "src").rglob("*")
             if p.suffix in (".h", ".cpp", ".cu")]
    files += [(p, PUBLIC.get(p.name)) for p in (root / "include" / "maskrcnn").glob("*.h")]
    errors, checked = [], 0
    for path, layer in files:
        if layer is None:
            errors.append(f"{path.relative_to(root)}: in no layer (add it to tests/layering/check_layers.py)")
            continue
        if layer == "top":
            continue
        for n, line in enumerate(path.read_text().splitlines(), 1):
            m = re.match(r'\s*#\s*include\s+"([^"]+)"', line)
            if not m:
                continue
            target = layer_of_include(m.group(1))
            checked += 1
            if target is None:
                errors.append(f"{path.relative_to(root)}:{n}: includes {m.group(1)}, which is in no layer")
            elif target != layer and target not in BELOW[layer]:
                errors.append(f"{path.relative_to(root)}:{n}: {layer} includes {m.group(1)} ({target})")
    for e in errors:
        print(e)
    print(f"{checked} includes checked, {len(errors)} against the layers")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
