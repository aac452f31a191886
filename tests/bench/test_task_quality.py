from collections import Counter

from bench.task_quality import shuffle_answers


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
