"""How a failure is told in one line: Hydra's composition errors, and advice for those every resume would meet again."""
import os

from cfgs.schema import ConfigError


def composition_error(error):
    """Hydra's or OmegaConf's error in one line, without the search path and the advice to append keys."""
    seen, todo = [], [error]
    while todo:  # the run_dir resolver's own error, wherever Hydra and OmegaConf wrapped it
        e = todo.pop()
        if isinstance(e, ConfigError):
            return str(e)
        seen.append(e)
        todo += [c for c in (e.__cause__, e.__context__) if c is not None and c not in seen]
    chain = [error]
    while chain[-1].__cause__:
        chain.append(chain[-1].__cause__)
    noise = ("Config search path", "provider=", "reference_type", "object_type", "Set the environment", "To append")
    lines = [line.strip() for e in chain for line in str(e).splitlines() if line.strip()]
    kept = list(dict.fromkeys(line for line in lines if not line.startswith(noise)))  # Hydra repeats OmegaConf
    text = "; ".join(kept).replace("Error merging override ", "").replace(".;", ";").replace(":;", ":")
    return f"{text} (keys and types: cfgs/config.yaml, cfgs/schema.py)"


def advice(error: BaseException) -> str | None:
    """What to change, in one line with the error, for one every resume would meet again; else None."""
    text, module = str(error), type(error).__module__ or ""
    if "MUJOCO_GL" in text:
        fix = (f"MUJOCO_GL={os.environ.get('MUJOCO_GL')!s} cannot render here: set MUJOCO_GL=egl (headless with EGL), "
               f"osmesa (software) or glfw (a display), then start again")
    elif module.startswith("gymnasium.error") or (isinstance(error, ImportError) and "environments" in text
                                                   and "gymnasium" in text):
        fix = "change env.id to an environment gymnasium has (cfgs/env/*.yaml: e.g. Hopper-v4)"
    elif isinstance(error, ValueError) and "Seed must be between" in text:
        fix = "give seeds=[...] between 0 and 2**32 - 1"
    elif isinstance(error, MemoryError) or type(error).__name__ == "OutOfMemoryError" or (
            isinstance(error, RuntimeError) and any(s in text.lower() for s in ("out of memory", "can't allocate"))):
        fix = "out of memory: lower train.batch_size, eval.episodes or eval.final_episodes (or the model's size)"
    elif module.startswith("wandb"):
        fix = "W&B: log in (`wandb login`, or WANDB_API_KEY), or set WANDB_MODE=offline, or logger=[csv]"
    else:
        return None
    cause = text.strip().splitlines()[-1].rstrip(".") if text.strip() else type(error).__name__
    return f"{cause}: {fix}"
