"""buffer.py: returns-to-go, trajectory splitting, the sampler, and dataset files."""
import hashlib

import h5py
import numpy as np
import pytest
from omegaconf import OmegaConf

import buffer
from buffer import SequenceBuffer, Transitions
from conftest import HOPPER_ACT, HOPPER_OBS, TRAJECTORIES, run_entry, write_d4rl_file
from plumbing import sources
from plumbing.sources import DatasetError


def make_sequences(path, context_len=5, **kwargs):
    transitions = Transitions.from_hdf5(path, HOPPER_OBS, HOPPER_ACT)
    return SequenceBuffer(transitions, context_len, reward_scale=10.0, max_timestep=1000, **kwargs)


def test_trajectories_split_on_terminals_timeouts_and_file_end(hopper_file):
    data = make_sequences(hopper_file)
    assert data.lengths.tolist() == [n for n, _ in TRAJECTORIES]
    assert data.returns.tolist() == [(i + 1) * n for i, (n, _) in enumerate(TRAJECTORIES)]
    assert data.timesteps[data.starts].tolist() == [0] * len(TRAJECTORIES)


def test_returns_to_go_count_down_to_the_last_reward(hopper_file):
    data = make_sequences(hopper_file)
    start, n, reward = data.starts[2], data.lengths[2], 3.0  # 50 steps of reward 3
    rtg = data.returns_to_go[start:start + n] * 10.0  # undo reward_scale
    np.testing.assert_allclose(rtg, reward * np.arange(n, 0, -1), rtol=1e-6)


def test_batch_shapes_and_right_padding_with_mask(hopper_file):
    data = make_sequences(hopper_file, context_len=5)
    states, actions, rtg, timesteps, mask = data.sample(256, np.random.default_rng(0))
    assert states.shape == (256, 5, HOPPER_OBS) and actions.shape == (256, 5, HOPPER_ACT)
    assert rtg.shape == (256, 5, 1) and timesteps.shape == (256, 5) and mask.shape == (256, 5)
    assert (np.diff(mask, axis=1) <= 0).all(), "real steps come first, padding after"
    assert (mask[:, 0] == 1).all() and (mask == 0).any()
    padded = mask == 0
    assert (states[padded] == 0).all() and (actions[padded] == 0).all() and (rtg[padded] == 0).all()
    real = mask == 1
    steps_in_window = timesteps[real.all(1)]
    assert (np.diff(steps_in_window, axis=1) == 1).all(), "a full window is K consecutive steps"


def test_short_trajectory_fills_only_its_own_steps(tmp_path):
    data = make_sequences(write_d4rl_file(tmp_path / "short.hdf5", [(3, "terminal")]), context_len=5)
    _, _, _, timesteps, mask = data.sample(64, np.random.default_rng(0))
    for row_steps, row_mask in zip(timesteps, mask):
        first = row_steps[0]
        assert row_mask.sum() == 3 - first
        assert row_steps[row_mask == 1].tolist() == list(range(first, 3))


def test_sampling_follows_trajectory_length(hopper_file):
    data = make_sequences(hopper_file)
    states = data.sample(100_000, np.random.default_rng(1))[0]
    row_of = {row.tobytes(): i for i, row in enumerate(data.states)}  # every fixture state is distinct
    first_steps = np.array([row_of[s.tobytes()] for s in states[:, 0]])
    traj = np.searchsorted(data.starts, first_steps, side="right") - 1
    frequency = np.bincount(traj, minlength=data.num_trajectories) / len(traj)
    np.testing.assert_allclose(frequency, data.lengths / data.lengths.sum(), atol=0.006)


def test_window_starts_are_uniform_over_all_steps(hopper_file):
    data = make_sequences(hopper_file)
    _, _, _, timesteps, _ = data.sample(200_000, np.random.default_rng(2))
    frequency = np.bincount(timesteps[:, 0], minlength=50) / len(timesteps)
    expected = np.array([(data.lengths > t).sum() for t in range(50)]) / data.lengths.sum()
    np.testing.assert_allclose(frequency, expected, atol=0.003)


def test_uniform_and_return_weighting(hopper_file):
    uniform = make_sequences(hopper_file, sample_by="uniform").traj_probs
    np.testing.assert_allclose(uniform, 1 / len(TRAJECTORIES))
    by_return = make_sequences(hopper_file, sample_by="return")
    assert np.argmax(by_return.traj_probs) == np.argmax(by_return.returns)


def test_top_trajectories_are_those_at_or_above_the_percentile():
    returns = np.array([5.0, 1.0, 9.0, 3.0, 7.0, 2.0, 8.0, 4.0, 6.0, 10.0])
    assert returns[buffer.top_trajectories(returns, 30)].tolist() == [9.0, 8.0, 10.0]
    assert buffer.top_trajectories(returns, 100).all()


def test_top_percent_keeps_the_best_trajectories(hopper_file):
    data = make_sequences(hopper_file, top_percent=50)
    assert sorted(data.returns.tolist()) == sorted(make_sequences(hopper_file).returns.tolist())[3:]
    assert len(data.rewards) == data.lengths.sum()


def test_state_statistics_describe_the_kept_states(hopper_file):
    data = make_sequences(hopper_file, top_percent=50)  # keeps trajectories 3, 5 and 6
    with h5py.File(hopper_file) as f:
        kept = np.concatenate([f["observations"][33:83], f["observations"][87:124]])
    np.testing.assert_allclose(data.state_mean, kept.mean(0), rtol=1e-5)
    np.testing.assert_allclose(data.state_std, kept.std(0) + 1e-6, rtol=1e-5)


# --- dataset files -------------------------------------------------------------------------------


def test_a_dataset_is_read_from_d4rls_file_name():  # an unknown env or dataset: test_bad_input.py
    assert sources.dataset_file("walker2d", "medium-expert") == "walker2d_medium_expert-v2.hdf5"


def test_missing_file_offline_names_file_url_and_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("D4RL_DATASET_DIR", str(tmp_path))
    monkeypatch.setattr(sources, "D4RL_URL", "http://127.0.0.1:9/{file}")  # nothing listens there
    with pytest.raises(DatasetError) as err:
        sources.find_file("hopper", "medium", HOPPER_OBS, HOPPER_ACT)
    message = str(err.value)
    assert "http://127.0.0.1:9/hopper_medium-v2.hdf5" in message and str(tmp_path) in message
    assert list(tmp_path.iterdir()) == [], "a failed download leaves nothing behind"


def test_download_is_checked_then_renamed_into_the_cache(tmp_path, monkeypatch):
    mirror, cache = tmp_path / "mirror", tmp_path / "cache"
    mirror.mkdir()
    write_d4rl_file(mirror / "hopper_medium-v2.hdf5")
    monkeypatch.setenv("D4RL_DATASET_DIR", str(cache))
    monkeypatch.setattr(sources, "D4RL_URL", mirror.as_uri() + "/{file}")
    path = sources.find_file("hopper", "medium", HOPPER_OBS, HOPPER_ACT)
    assert path == cache / "hopper_medium-v2.hdf5" and path.exists()
    assert [p.name for p in cache.iterdir()] == ["hopper_medium-v2.hdf5"]


def test_download_of_a_corrupt_file_is_not_kept(tmp_path, monkeypatch):
    mirror, cache = tmp_path / "mirror", tmp_path / "cache"
    mirror.mkdir()
    (mirror / "hopper_medium-v2.hdf5").write_bytes(b"not an hdf5 file")
    monkeypatch.setenv("D4RL_DATASET_DIR", str(cache))
    monkeypatch.setattr(sources, "D4RL_URL", mirror.as_uri() + "/{file}")
    with pytest.raises(DatasetError, match="truncated or corrupt"):
        sources.find_file("hopper", "medium", HOPPER_OBS, HOPPER_ACT)
    assert list(cache.iterdir()) == []


def test_truncated_file_in_the_cache_is_downloaded_again(tmp_path, monkeypatch):
    mirror, cache = tmp_path / "mirror", tmp_path / "cache"
    mirror.mkdir(), cache.mkdir()
    good = write_d4rl_file(mirror / "hopper_medium-v2.hdf5").read_bytes()
    (cache / "hopper_medium-v2.hdf5").write_bytes(good[: len(good) // 2])
    monkeypatch.setenv("D4RL_DATASET_DIR", str(cache))
    monkeypatch.setattr(sources, "D4RL_URL", mirror.as_uri() + "/{file}")
    path = sources.find_file("hopper", "medium", HOPPER_OBS, HOPPER_ACT)
    assert path.read_bytes() == good


def test_a_truncated_file_is_reported_with_a_fix_that_keeps_the_users_copy(hopper_file):
    data = hopper_file.read_bytes()
    hopper_file.write_bytes(data[: len(data) // 2])
    with pytest.raises(DatasetError, match="truncated or corrupt.*replace it with a good copy") as err:
        Transitions.from_hdf5(hopper_file, HOPPER_OBS, HOPPER_ACT)
    assert "delete" not in str(err.value), "buffer.path may be the user's only copy"


def test_a_dataset_folder_that_cannot_be_created_is_named(tmp_path, monkeypatch):
    (tmp_path / "a_file").write_text("")
    monkeypatch.setenv("D4RL_DATASET_DIR", str(tmp_path / "a_file" / "datasets"))
    with pytest.raises(DatasetError, match="D4RL_DATASET_DIR=.*cannot be created.*set D4RL_DATASET_DIR"):
        sources.find_file("hopper", "medium", HOPPER_OBS, HOPPER_ACT)


def transitions_of(trajectories, **changes):
    """Transitions of the fixture's layout, with some arrays replaced."""
    rng = np.random.default_rng(0)
    n = sum(length for length, _ in trajectories)
    ends = np.zeros(n, bool)
    ends[np.cumsum([length for length, end in trajectories]) - 1] = [end != "cut" for _, end in trajectories]
    arrays = dict(observations=rng.normal(size=(n, HOPPER_OBS)).astype(np.float32),
                  actions=rng.uniform(-1, 1, size=(n, HOPPER_ACT)).astype(np.float32),
                  rewards=np.ones(n, np.float32), ends=ends)
    return Transitions(**{**arrays, **changes}, source="data.hdf5")


LOW, HIGH = -np.ones(HOPPER_ACT, np.float32), np.ones(HOPPER_ACT, np.float32)


def test_the_fixtures_data_passes_the_checks():
    transitions_of(TRAJECTORIES).check(LOW, HIGH)


def test_an_empty_dataset_is_refused():
    empty = Transitions(np.zeros((0, HOPPER_OBS), np.float32), np.zeros((0, HOPPER_ACT), np.float32),
                        np.zeros(0, np.float32), np.zeros(0, bool), "data.hdf5")
    with pytest.raises(DatasetError, match="data.hdf5: holds no transitions"):
        empty.check(LOW, HIGH)


@pytest.mark.parametrize("trajectories", [[(1, "cut")], [(40, "cut")]])
def test_a_dataset_without_a_complete_trajectory_is_refused(trajectories):
    with pytest.raises(DatasetError, match="no complete trajectory: none of its .* steps is marked"):
        transitions_of(trajectories).check(LOW, HIGH)


def test_a_dataset_whose_every_step_is_terminal_is_refused():
    with pytest.raises(DatasetError, match="every one of its 5 steps ends a trajectory"):
        transitions_of([(1, "terminal")] * 5).check(LOW, HIGH)


def test_actions_outside_the_env_bounds_are_counted_and_measured():
    transitions = transitions_of(TRAJECTORIES)
    transitions.actions[[3, 7]] = 3.5  # two rows, 2.5 beyond the bound
    with pytest.raises(DatasetError, match=r"2 of 124 actions lie outside .*\[-1, 1\], by up to 2.5"):
        transitions.check(LOW, HIGH)


def test_states_whose_statistics_overflow_are_refused():
    transitions = transitions_of(TRAJECTORIES)
    transitions.observations[0, 0] = 3e38  # finite, but its square is not
    with pytest.raises(DatasetError, match="state statistics overflow"):
        transitions.check(LOW, HIGH)


def test_very_short_trajectories_are_warned_about_with_numbers(caplog):
    transitions_of([(2, "terminal")] * 10 + [(30, "timeout")]).check(LOW, HIGH)
    assert "11 trajectories of median length 2.0 steps" in caplog.text


def test_missing_file_is_reported_with_the_fix(tmp_path):
    with pytest.raises(DatasetError, match="no such file.*resume=<run> buffer.path=<the file.s new place>"):
        Transitions.from_hdf5(tmp_path / "moved.hdf5", HOPPER_OBS, HOPPER_ACT)


def test_another_envs_file_is_rejected_by_shape(tmp_path):
    walker = write_d4rl_file(tmp_path / "walker.hdf5", obs_dim=17, act_dim=6)
    with pytest.raises(DatasetError, match=r"'observations' has shape \(124, 17\), expected \(124, 11\)"):
        Transitions.from_hdf5(walker, HOPPER_OBS, HOPPER_ACT)


def test_missing_keys_and_nan_values_are_reported(hopper_file):
    with h5py.File(hopper_file, "a") as f:
        f["rewards"][3] = np.nan
    with pytest.raises(DatasetError, match="'rewards' holds NaN or inf values: replace it"):
        Transitions.from_hdf5(hopper_file, HOPPER_OBS, HOPPER_ACT)
    with h5py.File(hopper_file, "a") as f:
        del f["timeouts"]
    with pytest.raises(DatasetError, match=r"lacks the D4RL keys \['timeouts'\]"):
        Transitions.from_hdf5(hopper_file, HOPPER_OBS, HOPPER_ACT)


def test_transitions_hold_every_step_and_trajectory_end(hopper_file):
    transitions = Transitions.from_hdf5(hopper_file, HOPPER_OBS, HOPPER_ACT)
    n = len(transitions)
    assert transitions.observations.shape == (n, HOPPER_OBS) and transitions.actions.shape == (n, HOPPER_ACT)
    assert transitions.ends.sum() == 5 and n == sum(length for length, _ in TRAJECTORIES)


def test_the_trajectory_scores_read_the_env_from_the_file_name(hopper_file):
    scores = buffer.trajectory_scores_and_lengths(hopper_file)[0]
    to_score = lambda r: 100 * (r + 20.272305) / (3234.3 + 20.272305)  # noqa: E731  hopper's d4rl constants
    assert len(scores) == 6
    np.testing.assert_allclose(sorted(scores)[-1], to_score(50 * 3))  # trajectory 3: 50 steps of reward 3


# Several files as one dataset (D4RL's medium-expert is its medium file followed by its expert file)

def test_several_files_read_in_order_as_one_dataset_with_the_normalization_over_all(tmp_path):
    medium = write_d4rl_file(tmp_path / "hopper_medium-v2.hdf5", trajectories=[(30, "terminal"), (25, "timeout")])
    expert = write_d4rl_file(tmp_path / "hopper_expert-v2.hdf5", trajectories=[(40, "timeout"), (12, "timeout")],
                             seed=1)
    both = Transitions.from_files([medium, expert], HOPPER_OBS, HOPPER_ACT)
    starts, lengths, returns = both.trajectories()
    assert list(lengths) == [30, 25, 40, 12] and list(returns) == [30.0, 50.0, 40.0, 24.0]  # the files in order
    parts = [Transitions.from_hdf5(p, HOPPER_OBS, HOPPER_ACT) for p in (medium, expert)]
    data = SequenceBuffer(both, context_len=5, reward_scale=1.0, max_timestep=100)
    np.testing.assert_allclose(data.state_mean, np.concatenate([p.observations for p in parts]).mean(0), rtol=1e-5)
    assert both.source == f"{medium} + {expert}"


def test_a_files_cut_off_last_episode_does_not_run_into_the_next_file(tmp_path):
    first = write_d4rl_file(tmp_path / "a.hdf5", trajectories=[(10, "terminal"), (7, "cut")])  # cut at the end
    second = write_d4rl_file(tmp_path / "b.hdf5", trajectories=[(9, "timeout")])
    lengths = Transitions.from_files([first, second], HOPPER_OBS, HOPPER_ACT).trajectories()[1]
    assert list(lengths) == [10, 7, 9]


def test_an_error_in_one_of_several_files_names_that_file(tmp_path):
    good = write_d4rl_file(tmp_path / "hopper_medium-v2.hdf5")
    bad = tmp_path / "hopper_expert-v2.hdf5"
    bad.write_bytes(b"not hdf5")
    with pytest.raises(DatasetError, match=f"^{bad} is truncated or corrupt"):
        Transitions.from_files([good, bad], HOPPER_OBS, HOPPER_ACT)


def test_medium_expert_is_the_medium_and_expert_files_where_d4rls_own_is_missing(tmp_path, monkeypatch):
    monkeypatch.setenv("D4RL_DATASET_DIR", str(tmp_path))
    monkeypatch.setattr(sources, "D4RL_URL", "http://127.0.0.1:9/{file}")  # nothing to download
    for name in ("medium", "expert"):
        write_d4rl_file(tmp_path / f"hopper_{name}-v2.hdf5")
    found = sources.find_dataset("hopper", "medium-expert", HOPPER_OBS, HOPPER_ACT)
    assert found == [tmp_path / "hopper_medium-v2.hdf5", tmp_path / "hopper_expert-v2.hdf5"]
    write_d4rl_file(tmp_path / "hopper_medium_expert-v2.hdf5")  # D4RL's own file, where it is there
    assert sources.find_dataset("hopper", "medium-expert", HOPPER_OBS, HOPPER_ACT) == [
        tmp_path / "hopper_medium_expert-v2.hdf5"]


def test_a_run_records_each_file_it_read_and_its_sha256(tmp_path):
    files = [write_d4rl_file(tmp_path / f"hopper_{name}-v2.hdf5", seed=i) for i, name in enumerate(("medium", "expert"))]
    run_entry("main.py", tmp_path / "run", f"buffer.path=[{files[0]},{files[1]}]", "seeds=[0]")
    recorded = OmegaConf.load(tmp_path / "run" / "config.yaml").buffer
    assert list(recorded.files) == [str(f) for f in files]
    assert list(recorded.sha256) == [hashlib.sha256(f.read_bytes()).hexdigest() for f in files]


def test_held_out_trajectories_are_the_same_for_every_seed_and_never_trained_on(hopper_file):
    data, again = make_sequences(hopper_file, holdout=0.5), make_sequences(hopper_file, holdout=0.5)
    held = data.held_out
    assert sorted([*data.lengths, *held.lengths]) == sorted(n for n, _ in TRAJECTORIES)  # each on one side
    assert len(held.lengths) and len(data.lengths) and held.lengths.tolist() == again.held_out.lengths.tolist()
    assert not {tuple(s) for s in held.states} & {tuple(s) for s in data.states}
    assert make_sequences(hopper_file).held_out is None
    with pytest.raises(DatasetError, match="buffer.holdout=0.9999 holds out every trajectory that buffer.top_percent"):
        make_sequences(hopper_file, holdout=0.9999)
