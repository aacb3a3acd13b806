"""What the entry points share below them: how a failure that no resume can fix is told (advice)."""
import os


def _is_out_of_memory(error: BaseException) -> bool:
    text = str(error).lower()
    return isinstance(error, MemoryError) or type(error).__name__ == "OutOfMemoryError" or (
        isinstance(error, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text))


def _is_unknown_env(error: BaseException) -> bool:
    module = type(error).__module__ or ""
    return module.startswith("gymnasium.error") or (
        isinstance(error, ImportError) and "environments" in str(error) and "gymnasium" in str(error))


ADVICE = (  # (does this error come from ..., what to change): failures that happen again on every resume
    (lambda e: "MUJOCO_GL" in str(e),
     lambda e: f"MUJOCO_GL={os.environ.get('MUJOCO_GL')!s} cannot render here: set MUJOCO_GL=egl (headless with "
               f"EGL), osmesa (software) or glfw (a display), then start again"),
    (_is_unknown_env, lambda e: "change env.id to an environment gymnasium has (cfgs/env/*.yaml: e.g. Hopper-v4)"),
    (lambda e: isinstance(e, ValueError) and "Seed must be between" in str(e),
     lambda e: "give seeds=[...] between 0 and 2**32 - 1"),
    (_is_out_of_memory,
     lambda e: "out of memory: lower train.batch_size, eval.episodes or eval.final_episodes (or the model's size)"),
    (lambda e: (type(e).__module__ or "").startswith("wandb"),
     lambda e: "W&B: log in (`wandb login`, or WANDB_API_KEY), or give wandb.mode=offline, or logger=[csv]"),
)


def advice(error: BaseException) -> str | None:
    """What to change for an error that a resume would meet again (a bad MUJOCO_GL, env.id or seed, out of memory,
    W&B without a key), as one line with the error; None for a failure a resume may get past."""
    for matches, fix in ADVICE:
        if matches(error):
            cause = str(error).strip().splitlines()[-1].rstrip(".") if str(error).strip() else type(error).__name__
            return f"{cause}: {fix(error)}"
    return None
