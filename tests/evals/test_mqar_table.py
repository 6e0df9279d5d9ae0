"""The MQAR table writer: slices sorted by length then kv, one row per run, CSV beside the markdown."""
import csv

from recall_lm.evals.sweeps import mqar_table


def test_write_table(tmp_path, monkeypatch):
    monkeypatch.setattr(mqar_table, "RESULTS", tmp_path)
    rows = [
        {
            "config": "configs/mqar/a.yaml",
            "mixer": "attention",
            "params": 1234,
            "state_size": 32768,
            "state_at_len": 64,
            "steps": 10,
            "seconds": 1.5,
            "metrics": {
                "val/acc": 0.5,
                "val/acc/L64_kv16": 0.25,
                "val/acc/L64_kv4": 0.75,
                "val/acc/L128_kv8": 0.5,
            },
        },
        {
            "config": "configs/mqar/b.yaml",
            "mixer": "base_conv+based",
            "params": 99,
            "state_size": 7,
            "state_at_len": 64,
            "steps": 10,
            "seconds": 2.0,
            "metrics": {"val/acc": 1.0, "val/acc/L64_kv4": 1.0},
        },
    ]
    path = mqar_table.write_table(rows, "t")
    lines = path.read_text().splitlines()
    header = lines[2]
    assert header.index("acc L64_kv4") < header.index("acc L64_kv16") < header.index("acc L128_kv8")
    assert (
        "| configs/mqar/a.yaml | attention | 1,234 | 32,768 | 0.500 | 0.750 | 0.250 | 0.500 | 10 | 1.5 |"
        in lines
    )
    assert "| 1.000 | 1.000 | nan | nan |" in lines[-1]  # slices a run did not report stay visible as nan
    table = list(csv.reader(open(tmp_path / "t.csv")))
    assert len(table) == 3 and table[1][1] == "attention"
