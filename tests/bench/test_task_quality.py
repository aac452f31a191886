from collections import Counter

from bench.task_quality import flip_labels, shuffle_answers


def _row(i: int, answer: str) -> dict:
    return {"messages": [{"role": "user", "content": f"text {i}"}, {"role": "assistant", "content": answer}]}


def test_shuffled_answers_move_every_answer_and_keep_the_label_counts() -> None:
    rows = [_row(i, f"label-{i}") for i in range(20)]
    out = shuffle_answers(rows, seed=7)
    assert [r["messages"][0] for r in out] == [r["messages"][0] for r in rows]  # texts stay in place
    assert all(
        o["messages"][-1]["content"] != r["messages"][-1]["content"] for o, r in zip(out, rows, strict=True)
    )
    assert Counter(r["messages"][-1]["content"] for r in out) == Counter(
        r["messages"][-1]["content"] for r in rows
    )
    assert rows[0]["messages"][-1]["content"] == "label-0"  # the input is not changed in place
    assert shuffle_answers(rows, seed=7) == out  # same seed, same permutation


def test_flipped_labels_rename_every_label_the_same_way_in_every_row() -> None:
    rows = [_row(i, ("positive", "negative", "neutral")[i % 3]) for i in range(12)]
    out = flip_labels(rows, seed=7)
    pairs = {
        (r["messages"][-1]["content"], o["messages"][-1]["content"]) for r, o in zip(rows, out, strict=True)
    }
    rename = dict(pairs)
    assert len(rename) == len(pairs) == 3  # one new name per label, the same in every row
    assert all(old != new for old, new in rename.items()) and set(rename.values()) == set(rename)
    assert [r["messages"][0] for r in out] == [r["messages"][0] for r in rows]
    assert rows[0]["messages"][-1]["content"] == "positive"  # the input is not changed in place


def test_the_shuffled_check_has_a_task_where_chance_is_a_quarter() -> None:
    # on two labels a permutation leaves half the answers right, which the base sees through
    # (docs/benchmarks.md); the shuffled check needs a classification task with four labels or more
    from bench.task_quality import TASKS

    labelled = [t["task"] for t in TASKS.values() if t["task"]["type"] == "classification"]
    assert max(len(t["labels"]) for t in labelled) >= 4


def test_every_bench_task_is_a_task_the_api_accepts() -> None:
    # a task the API would refuse (a seed whose label is not in the list, a bad schema) would fail
    # the bench after its first hour, not here
    from bench.task_quality import TASKS
    from domain.job_config import TaskSpec

    for name, spec in TASKS.items():
        task = TaskSpec.model_validate(spec["task"])
        assert task.type == spec["task"]["type"], name
    seeded = TaskSpec.model_validate(TASKS["classification-seeded"]["task"])
    assert seeded.seeds_asked_back == 6  # three reviews a label, each with its answer
