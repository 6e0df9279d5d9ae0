"""Small constructor arguments for every registered mixer, so generic protocol tests cover them all.

A newly registered mixer must add its cases here (test_every_mixer_has_a_case fails otherwise).
"""
D_MODEL = 32

MIXER_CASES: dict[str, list[dict]] = {
    "attention": [{"num_heads": 2}],
    "linear_attention": [
        {"num_heads": 2, "feature_map": "elu"},
        {"num_heads": 2, "feature_map": "taylor", "feature_dim": 4},
        {"num_heads": 1, "feature_map": "identity", "normalize": False},
    ],
}


def all_cases() -> list[tuple[str, dict]]:
    return [(name, kwargs) for name, cases in MIXER_CASES.items() for kwargs in cases]


def case_id(case: tuple[str, dict]) -> str:
    name, kwargs = case
    return name + ("-" + "-".join(f"{k}={v}" for k, v in kwargs.items()) if kwargs else "")
