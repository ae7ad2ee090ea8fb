import numpy as np
import pytest

from ray_style import plan, video
from tests.conftest import DATA


def test_chains_split_at_cuts_then_length_with_lead_ins():
    chains = plan.plan_chains(100, [40], segment_length=25, overlap=4)
    # pieces of 25 from each shot's start, the last two balanced (no short last piece)
    assert [(c.start, c.end, c.lead_in) for c in chains] == [(0, 20, 0), (16, 40, 4), (40, 65, 0), (61, 83, 4),
                                                          (79, 100, 4)]
    covered = sorted({f for c in chains for f in c.frames})
    assert covered == list(range(100))
    # the rule of earlier versions (every piece of a shot balanced), still read back from their jobs
    old = plan.plan_chains(100, [40], segment_length=25, overlap=4, rule="balanced")
    assert [(c.start, c.end, c.lead_in) for c in old] == [(0, 20, 0), (16, 40, 4), (40, 60, 0), (56, 80, 4),
                                                       (76, 100, 4)]
    assert plan.is_plan_of(old, 25, 100, [40], 4) and plan.is_plan_of(chains, 25, 100, [40], 4)
    assert [c.end - c.start - c.lead_in for c in plan.plan_chains(1000, [], 240, 0)] == [240, 240, 240, 140, 140]


def _signatures(frame_count: int, rng) -> list:
    """Thumbnails of a film with cuts at random frames (a new level) and a little noise."""
    level, made = rng.random((8, 16)), []
    for _ in range(frame_count):
        if rng.random() < 0.03:
            level = rng.random((8, 16))
        made.append(np.clip(level + rng.normal(0, 0.01, (8, 16)), 0, 1).astype(np.float32))
    return made


def test_chains_settled_while_decoding_are_the_whole_plans_first_chains():
    """Decoded front to back in steps of any size, a film's settled cuts are its cuts so far and
    its settled chains a prefix of the whole plan, which they become once it is all decoded."""
    rng = np.random.default_rng(7)
    grew = 0
    for _ in range(200):
        frames, length = int(rng.integers(1, 400)), int(rng.integers(1, 40))
        overlap = int(rng.integers(0, length))
        signatures = _signatures(frames, rng)
        cuts = plan.detect_cuts(signatures, 6.0)
        whole = plan.plan_chains(frames, cuts, length, overlap)
        settled = plan.Settled(frames, 6.0, length, overlap)
        decoded, known = 0, 0
        while decoded < frames:
            step = int(rng.integers(1, 60))
            settled.extend(signatures[decoded:decoded + step])
            decoded = min(frames, decoded + step)
            chains = settled.chains()
            assert chains == whole[:len(chains)] and len(chains) >= known
            assert settled.cuts == [c for c in cuts if c < settled.settled]
            grew += len(chains) > known and decoded < frames
            known = len(chains)
        assert settled.chains() == whole and settled.settled == frames
    assert grew > 100  # chains were known before the end, often


def test_a_long_shots_first_chains_are_known_two_pieces_into_it():
    settled = plan.Settled(10_000, 6.0, 48, 4)
    still = [np.full((8, 16), 0.5, np.float32)] * 150
    settled.extend(still[:100])
    assert settled.chains() == []  # 95 frames settled: the first piece could still be balanced
    settled.extend(still[100:])
    assert [(c.start, c.end) for c in settled.chains()] == [(0, 48), (44, 96)]  # 145 settled > 3 x 48


@pytest.mark.parametrize("frame_count,cuts,length,overlap", [(1, [], 5, 0), (50, [1, 2, 49], 7, 3), (97, [], 10, 9)])
def test_every_frame_blends_to_weight_one(frame_count, cuts, length, overlap):
    chains = plan.plan_chains(frame_count, cuts, length, overlap)
    for frame in range(frame_count):
        sources = plan.frame_sources(chains, frame)
        assert 1 <= len(sources) <= 2 and abs(sum(w for _, w in sources) - 1) < 1e-9
        assert all(w > 0 for _, w in sources)


def test_lead_in_ramps_towards_the_new_chain():
    chains = plan.plan_chains(20, [], 10, 3)
    weights = [dict(plan.frame_sources(chains, f)).get(1, 0.0) for f in range(6, 11)]
    assert weights == pytest.approx([0.0, 0.25, 0.5, 0.75, 1.0])


def test_scheduler_orders_chains_and_resumes_from_disk():
    chains = plan.plan_chains(6, [3], 10, 0)
    done = {(0, 0), (0, 1)}
    scheduler = plan.ChainScheduler(chains, lambda c, f: (c, f) in done, sequential=True)
    assert scheduler.remaining == 4
    ready = scheduler.ready()
    assert [(j.chain, j.frame, j.seeded) for j in ready] == [(0, 2, True), (1, 3, False)]
    scheduler.started(ready[0])
    assert [(j.chain, j.frame) for j in scheduler.ready()] == [(1, 3)]
    scheduler.failed(ready[0])  # its worker died: the frame is offered again
    assert (0, 2) in [(j.chain, j.frame) for j in scheduler.ready()]
    scheduler.started(ready[0])
    scheduler.done(ready[0])
    assert scheduler.remaining == 3 and (0, 2) not in [(j.chain, j.frame) for j in scheduler.ready()]
    independent = plan.ChainScheduler(chains, lambda c, f: False, sequential=False)
    assert len(independent.ready()) == 6 and not any(j.seeded for j in independent.ready())
    assert [(j.chain, j.frame) for j in independent.ready(2)] == [(0, 0), (0, 1)]


def test_detects_the_real_cut_and_not_motion():
    info = video.probe(DATA / "bikes_cut.mp4")
    signatures = [plan.frame_signature(f) for f in video.decode(info, info.width, info.height)]
    assert plan.detect_cuts(signatures, 6.0) == [10]
    assert plan.detect_cuts(signatures, 0) == []
    flat = [np.full((8, 16), v, np.float32) for v in np.linspace(0, 1, 20)]  # a steady fade
    assert plan.detect_cuts(flat, 6.0) == []


def test_chains_are_cut_shorter_to_give_every_worker_work():
    chains, length = plan.plan_for_workers(30, [], 48, 4, workers=8)
    assert len(chains) == 4 and length == plan.MIN_CHAIN  # not 1 chain for 8 workers, not below 8 frames
    chains, length = plan.plan_for_workers(30, [], 48, 4, workers=2)
    assert len(chains) == 2 and length == 15
    chains, length = plan.plan_for_workers(100, [40], 25, 4, workers=3)  # already enough chains: unchanged
    assert (len(chains), length) == (5, 25)
    assert sorted({f for c in chains for f in c.frames}) == list(range(100))


def test_seams_are_where_chains_meet_inside_a_shot():
    chains = plan.plan_chains(100, [40], segment_length=25, overlap=4)
    assert plan.seams(chains, [40]) == [20, 65, 83]  # 40 is a shot cut, not a seam
    assert plan.seams(plan.plan_chains(20, [], 10, 0), []) == [10]


def test_refinement_passes_cover_seams_then_the_whole_video_in_alternating_directions():
    chains = plan.plan_chains(60, [30], 12, 4)
    first, second, third = plan.refinement_passes(chains, [30], 60, 3)
    # Each seam's window is two sweeps that start at the seam and run outward.
    seam_list = plan.seams(chains, [30])
    assert [s.backward for s in first] == [True, False] * len(seam_list)
    assert [s.end for s in first[::2]] == seam_list == [s.start for s in first[1::2]]
    assert [s.frames[0] for s in first] == [f for seam in seam_list for f in (seam - 1, seam)]
    windows = [(s.start, s.end) for s in first]
    assert all(start < seam and seam + 1 < end for (start, _), (_, end), seam in zip(windows[::2], windows[1::2], seam_list))
    assert not any(start < 30 < end for start, end in windows)  # never across the shot cut
    assert all(a[1] <= b[0] for a, b in zip(windows, windows[1:]))  # windows never overlap
    assert first[0].start == chains[1].start - plan.SEAM_MARGIN
    for sweeps, backward in ((second, True), (third, False)):
        covered = sorted(f for s in sweeps for f in s.frames)
        assert covered == list(range(60)) and all(s.backward == backward for s in sweeps)
    assert second[0].frames[0] == second[0].end - 1 and second[0].index // plan.PASS_BASE == 2
    scheduler = plan.ChainScheduler(second, lambda c, f: False, sequential=True)
    ready = scheduler.ready()
    assert all(job.frame == s.end - 1 and not job.seeded for job, s in zip(ready, second))


def test_a_span_counts_only_the_chains_it_renders():
    """``--frames 10:14`` inside one chain renders one chain, and says so."""
    from ray_style.frames import FrameGraph
    from ray_style.settings import VideoSettings

    chains = plan.plan_chains(40, [], segment_length=20, overlap=0)
    settings = VideoSettings(passes=0)
    assert FrameGraph(chains, [], 40, settings).chains_in_span == 2
    assert FrameGraph(chains, [], 40, settings, (10, 14)).chains_in_span == 1
    assert FrameGraph(chains, [], 40, settings, (18, 22)).chains_in_span == 2


def test_a_plan_read_back_is_used_only_when_it_is_a_plan_of_the_video():
    chains = plan.plan_chains(40, [17], 12, 2)
    assert plan.is_plan_of(chains, 12, 40, [17], 2)
    assert plan.is_plan_of(plan.plan_chains(12, [], 48, 4), 48, 12, [], 4)  # longer than the video: one chain
    edited = [*chains[:-1], plan.Chain(chains[-1].index, chains[-1].start, 10 ** 12, chains[-1].lead_in)]
    assert not plan.is_plan_of(edited, 12, 40, [17], 2)
    assert not plan.is_plan_of([plan.Chain(0, -3, 40, 0)], 40, 40, [], 2)
    assert not plan.is_plan_of(chains, 11, 40, [17], 2)  # not what that length makes
    assert not plan.is_plan_of(chains, True, 40, [17], 2) and not plan.is_plan_of(chains, "12", 40, [17], 2)
