"""Malformed variants of each format: every bad record becomes an error row naming the file and the
line where the record starts; good records around it are still parsed; nothing crashes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from soraprep.datasets import MetadataError, ingest_rows

DATA = Path(__file__).resolve().parents[1] / "data" / "datasets"


def errors(rows):
    return [(r["error"]["kind"], r["error"]["message"]) for r in rows if r["error"]]


def good(rows):
    return [r for r in rows if not r["error"]]


def test_panda70m_bad_rows_become_error_rows_with_lines(tmp_path):
    real = (DATA / "panda70m_validation.head6.csv").read_text().splitlines()
    header, row1, row2 = real[0], real[1], real[2]
    lines = [
        header,
        row1,                                                                   # line 2: fine (3 clips)
        'vid_nl,https://www.youtube.com/watch?v=vid_nl,"[[\'0:00:01.000\', \'0:00:02.000\'],\n [\'0:00:03.000\', \'0:00:04.000\']]","[\'a\', \'b\']","[0.5, 0.25]"',
        # ^ lines 3-4: a literal spanning two lines inside CSV quotes is one record
        "short,https://x.invalid/v,\"[['0:00:01.000', '0:00:02.000'], ['0:00:03.000', '0:00:04.000']]\",\"['only one']\",\"[0.1, 0.2]\"",
        "evil,https://x.invalid/v,\"__import__('os').system('touch PWNED')\",\"['a']\",\"[0.1]\"",   # line 6
        "unclosed,https://x.invalid/v,\"[['0:00:01.000', '0:00:02.000']\",\"['a']\",\"[0.1]\"",    # line 7
        "badclip,https://x.invalid/v,\"[['0:00:01.000', '0:00:02.000'], ['0:61:00.000', '1:00:00.000'], ['0:00:09.000', '0:00:05.000']]\",\"['a', 'b', 'c']\",\"[0.1, 0.2, 0.3]\"",  # line 8
        "too,many,columns,here,x,y",                                              # line 9
        row2,                                                                   # line 10: fine
    ]
    p = tmp_path / "panda.csv"
    p.write_bytes(("\n".join(lines) + "\n").encode() + b"enc,https://x.invalid/v,\"[['0:00:01.000', '0:00:02.000']]\",\"['caf\xe9']\",[0.1]\n")
    rows, report = ingest_rows(dataset="panda70m", path=p)
    assert not (tmp_path / "PWNED").exists() and not Path("PWNED").exists()
    errs = errors(rows)
    kinds = [k for k, _ in errs]
    assert kinds == ["length_mismatch", "bad_literal", "bad_literal", "bad_timestamp", "bad_span", "bad_columns",
                     "bad_encoding"]
    msgs = [m for _, m in errs]
    for m, line in zip(msgs, [5, 6, 7, 8, 8, 9, 11], strict=True):
        assert m.startswith(f"{p}:{line}: "), m
    assert "clip 1" in msgs[3] and "clip 2" in msgs[4]
    # good clips: 3 + 2 (two-line record) + 1 (badclip's clip 0) + 3
    ok = good(rows)
    assert len(ok) == 9 and report.clips == 9 and report.num_errors == 7
    assert [r["text"] for r in ok[3:5]] == ["a", "b"] and ok[4]["meta_line"] == 3 and ok[4]["start_s"] == 3.0
    assert ok[5]["clip_id"] == "badclip-0000"
    bad = {r["clip_id"]: r for r in rows if r["error"]}
    assert "badclip-0001" in bad and "badclip-0002" in bad   # per-clip errors keep the clip identity
    assert bad["short-L5"]["video_id"] == "short" and bad["short-L5"]["source"] == "https://x.invalid/v"
    assert report.records_read == 9
    assert all(r["error"]["stage"] == "ingest" for r in rows if r["error"])


def test_webvid_bad_rows_and_missing_columns(tmp_path):
    p = tmp_path / "webvid.csv"
    p.write_text("videoid,name,page_idx,page_dir,duration,contentUrl\n"
                 "1,ok,5,d,PT00H01M02.5S,https://x.invalid/1.mp4\n"
                 "2,bad duration,5,d,17 seconds,https://x.invalid/2.mp4\n"
                 "3,no url,5,d,PT10S,\n"
                 ",no id,5,d,PT10S,https://x.invalid/4.mp4\n"
                 "5,bad page,five,d,PT10S,https://x.invalid/5.mp4\n")
    rows, _ = ingest_rows(dataset="webvid", path=p)
    assert [k for k, _ in errors(rows)] == ["bad_duration", "missing_field", "missing_field", "bad_value"]
    assert [m.split(": ")[0] for _, m in errors(rows)] == [f"{p}:{n}" for n in (3, 4, 5, 6)]
    (ok,) = good(rows)
    assert ok["published_duration_s"] == 62.5 and ok["video_id"] == "1"
    q = tmp_path / "notwebvid.csv"
    q.write_text("id,caption\n1,x\n")
    with pytest.raises(MetadataError, match="not a WebVid CSV"):
        ingest_rows(dataset="webvid", path=q)


def test_msrvtt_truncated_json_keeps_records_before_the_break(tmp_path):
    text = (DATA / "msrvtt.grouped_test.head2.json").read_text()
    p = tmp_path / "msrvtt_caption_test.json"
    p.write_text(text.replace('}, {"video"', '},\n{"video"')[:-300])
    rows, report = ingest_rows(dataset="msrvtt", path=p)
    assert [r["video_id"] for r in good(rows)] == ["video7010"]
    ((kind, msg),) = errors(rows)
    assert kind == "bad_json" and msg.startswith(f"{p}:2: ")


def test_msrvtt_original_layout_bad_records(tmp_path):
    doc = json.loads((DATA / "msrvtt_original_layout.json").read_text())
    doc["videos"][1]["end time"] = "soon"
    doc["sentences"].append({"caption": "ghost", "video_id": "video9999", "sen_id": 1})
    doc["sentences"].append({"caption": 5, "video_id": "video99", "sen_id": 2})
    p = tmp_path / "train_val_videodatainfo.json"
    p.write_text(json.dumps(doc, indent=1))
    rows, _ = ingest_rows(dataset="msrvtt", path=p)
    kinds = sorted(k for k, _ in errors(rows))
    assert kinds == ["bad_timestamp", "missing_field", "unknown_video"]
    assert "video988" not in {r["video_id"] for r in good(rows)}  # its videos[] record is broken
    assert len(good(rows)) == 7
    lines = p.read_text().splitlines()
    for _, msg in errors(rows):
        line = int(msg.split(": ")[0].rsplit(":", 1)[1])
        assert lines[line - 1].strip().startswith("{"), (msg, lines[line - 1])


def test_videoinstruct_missing_answer_reports_the_records_line(tmp_path):
    recs = json.loads((DATA / "videoinstruct100k.quoted_records.json").read_text())
    recs.insert(1, {"q": "no answer", "video_id": "v_zzzzzzzzzzz"})
    p = tmp_path / "VideoInstruct_Dataset.json"
    p.write_text(json.dumps(recs, indent=4))
    rows, _ = ingest_rows(dataset="videoinstruct", path=p)
    ((kind, msg),) = errors(rows)
    assert kind == "missing_field" and msg.startswith(f"{p}:7: ")
    assert p.read_text().splitlines()[6].strip() == "{"
    assert len(good(rows)) == 2


def test_internvid_bad_lines(tmp_path):
    good_line = (DATA / "internvid_flt.jsonl").read_text().splitlines()[0]
    rec = json.loads(good_line)
    p = tmp_path / "InternVid-10M-FLT.jsonl"
    p.write_text("\n".join([
        good_line,
        '{"YoutubeID": "abc", "Start_timestamp": ',                                  # 2: not JSON
        json.dumps(dict(rec, Start_timestamp="7:33")),                             # 3: MM:SS is fine
        json.dumps(dict(rec, End_timestamp="00:07:99.000")),                       # 4: seconds >= 60
        json.dumps(dict(rec, UMT_Score="high")),                                   # 5: score not a number
        json.dumps({k: v for k, v in rec.items() if k != "Caption"}),              # 6: no caption
        "",
        json.dumps(dict(rec, End_timestamp="00:07:00.000")),                       # 8: ends before start
    ]) + "\n")
    rows, report = ingest_rows(dataset="internvid", path=p)
    assert [(k, m.split(": ")[0]) for k, m in errors(rows)] == [
        ("bad_json", f"{p}:2"), ("bad_timestamp", f"{p}:4"), ("bad_value", f"{p}:5"),
        ("missing_field", f"{p}:6"), ("bad_span", f"{p}:8")]
    assert [r["start_s"] for r in good(rows)] == [453.689, 453.0]
    assert report.records_read == 7


def test_youku_and_shot2story_bad_records(tmp_path):
    y = tmp_path / "youku.csv"
    y.write_text("video_id:FILE,golden_caption\nvideos/a.mp4,\nvideos/b.mp4,[广告] text\n,text\n"
                 "videos/c.mp4,\"[1, 2]\"\n", encoding="utf-8")
    rows, _ = ingest_rows(dataset="youku-mplug", path=y)
    assert [(k, m.split(": ")[0]) for k, m in errors(rows)] == [
        ("missing_field", f"{y}:2"), ("missing_field", f"{y}:4"), ("bad_literal", f"{y}:5")]
    assert good(rows)[0]["text"] == "[广告] text"  # bracketed but not a list literal: a plain caption
    recs = json.loads((DATA / "shot2story_annotations.constructed.json").read_text())
    recs[0]["captions"] = recs[0]["captions"][:1]
    recs[1]["video_names"] = ["R2-Usq--J3U.2_10_5.mp4"]
    s = tmp_path / "20k_train.json"
    s.write_text(json.dumps(recs, indent=2))
    rows, _ = ingest_rows(dataset="shot2story", path=s, fps=25)
    assert [k for k, _ in errors(rows)] == ["length_mismatch", "bad_span"]
    assert errors(rows)[0][1].startswith(f"{s}:2: ")
    assert rows[1]["clip_id"] == "R2-Usq--J3U.2-0000" and rows[1]["error"]
    assert good(rows) == []


def test_duplicates_limit_and_bad_arguments(tmp_path):
    src = (DATA / "webvid10m.head10.csv").read_text().splitlines()
    p = tmp_path / "results_2M_val.csv"
    p.write_text("\n".join(src[:3] + [src[1]]) + "\n")
    rows, report = ingest_rows(dataset="webvid", path=p)
    assert [r["clip_id"] for r in rows] == ["1053841541-0000", "5641526-0000", "1053841541-0000-dup1"]
    assert report.errors == {"duplicate_clip": 1} and rows[2]["error"]["message"].startswith(f"{p}:4: ")
    assert {r["split"] for r in good(rows)} == {"val"}
    rows, report = ingest_rows(dataset="webvid", path=DATA / "webvid10m.head10.csv", limit=4, split="train")
    assert len(rows) == 4 and report.limited and {r["split"] for r in rows} == {"train"}
    for kw, msg in [({"split": "dev"}, "--split"), ({"limit": 0}, "--limit"), ({"fps": "fast"}, "--fps"),
                    ({"fps": -3}, "--fps")]:
        with pytest.raises(MetadataError, match=msg):
            ingest_rows(dataset="webvid", path=DATA / "webvid10m.head10.csv", **kw)
    with pytest.raises(MetadataError, match="does not exist"):
        ingest_rows(dataset="webvid", path=tmp_path / "nope.csv")
    with pytest.raises(MetadataError, match="unknown dataset"):
        ingest_rows(dataset="kinetics", path=p)
