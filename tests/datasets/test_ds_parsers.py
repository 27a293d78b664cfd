"""Every dataset parser on real metadata samples (tests/data/datasets, see SOURCES.md): exact clip
counts, spans, ids and captions, and a round trip through the manifest."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from soraprep.datasets import MetadataError, ingest, ingest_rows
from soraprep.manifest import read_manifest

DATA = Path(__file__).resolve().parents[1] / "data" / "datasets"


def rows_of(dataset: str, name: str, **kw) -> list[dict]:
    rows, report = ingest_rows(dataset=dataset, path=DATA / name, **kw)
    assert report.num_errors == 0, [r["error"] for r in rows if r["error"]]
    return rows


def test_panda70m_validation_csv_exact_clips_and_literal_quirks():
    rows = rows_of("panda70m", "panda70m_validation.head6.csv")
    assert len(rows) == 18  # 6 videos x 3 clips
    first = rows[0]
    assert (first["video_id"], first["clip_id"], first["clip_index"]) == ("-1hTK0wGrTg", "-1hTK0wGrTg-0000", 0)
    assert first["source"] == "https://www.youtube.com/watch?v=-1hTK0wGrTg"
    assert (first["start_s"], first["end_s"], first["duration_s"]) == (19.227, 28.278, 9.051)
    assert first["text"] == ("The speaker is standing in front of a purple background, wearing a blue shirt "
                             "and glasses.")
    assert first["captions"] == [first["text"]]
    assert first["matching_score"] == 0.50927734375
    assert first["split"] == "val"  # from the file name panda70m_validation...
    by_id = {r["clip_id"]: r for r in rows}
    # a caption with an apostrophe: the literal switches to double quotes
    assert by_id["-AM0oWK3RBA-0001"]["text"] == ("A man is cooking in a blue kitchen. he is wearing a chef's hat "
                                                 "and appears to be preparing food.")
    # CSV-doubled quotes inside a caption
    assert by_id["-DEqU1kASSg-0002"]["text"] == ('A picture of an orange background with the words '
                                                 '"watch this video" written on it.')
    assert (by_id["-DEqU1kASSg-0002"]["start_s"], by_id["-DEqU1kASSg-0002"]["end_s"]) == (1033.499, 1051.116)
    assert [r["clip_index"] for r in rows[:3]] == [0, 1, 2]
    assert len({r["clip_id"] for r in rows}) == 18


def test_panda70m_seven_columns_shots_relative_to_clip():
    rows = rows_of("panda70m", "panda70m_7col.csv")
    assert len(rows) == 3
    assert [r["desirable_filtering"] for r in rows] == ["1_still_foreground_image", "desirable", "desirable"]
    assert [r["matching_score"] for r in rows] == [0.451416015625, 0.4990234375, 0.434814453125]
    third = rows[2]
    assert (third["start_s"], third["end_s"]) == (208.841, 213.68)
    assert third["shots_rel_s"] == [[0.0, 2.702], [2.736, 4.838]]
    assert third["shots_s"] == [[208.841, 211.543], [211.577, 213.679]]
    assert rows[0]["shots_s"] == [[80.88, 83.949]]


def test_webvid_both_header_orders_give_the_same_clips():
    a = rows_of("webvid", "webvid10m.head10.csv")
    b = rows_of("webvid", "webvid2m_order.csv")
    assert len(a) == len(b) == 10
    assert [r["video_id"] for r in a] == ["1053841541", "5641526", "1019039938", "6251156", "23720764",
                                          "1009929137", "1020335461", "6543449", "30287869", "20655292"]
    for x, y in zip(a, b, strict=True):
        for key in ("clip_id", "video_id", "source", "text", "published_duration_s", "start_s", "end_s"):
            assert x[key] == y[key], key
    assert a[0]["published_duration_s"] == 17.0 and a[6]["published_duration_s"] == 5.0 == a[6]["duration_s"]
    assert a[0]["start_s"] is None and a[0]["end_s"] is None  # whole videos
    assert a[6]["text"] == "Moroccan flag waving in the wind in medieval town essaouira, morocco"
    assert a[1]["source"].endswith("/5641526/preview/stock-footage-horse-grazing-seperated-on-green-screen.mp4")
    assert a[0]["page_idx"] == 27732 and a[0]["page_dir"] == "027701_027750"
    assert b[2]["page_dir"] is None and b[6]["page_dir"] is None and b[0]["page_dir"] == "027701_027750"


def test_msrvtt_grouped_keeps_all_twenty_captions_with_duplicates():
    rows = rows_of("msrvtt", "msrvtt.grouped_test.head2.json")
    assert [r["video_id"] for r in rows] == ["video7010", "video7011"]
    caps = rows[0]["captions"]
    assert len(caps) == 20 and len(set(caps)) == 18  # the published duplicates are kept
    assert rows[0]["text"] == "a clip showing a computer screen which contains instructions"
    assert rows[1]["captions"][-1] == "clip showing different colors"
    assert rows[0]["source"] == "video7010.mp4" and rows[0]["start_s"] is None
    assert rows[0]["split"] == "test"


def test_msrvtt_flattened_rehost_and_original_layout_agree():
    flat = rows_of("msrvtt", "msrvtt.hf_alexzigma_viewer_rows.tsv")
    orig = rows_of("msrvtt", "msrvtt_original_layout.json")
    assert len(flat) == 7 and len(orig) == 8  # video0 has a videos[] record but no sentence here
    assert orig[0]["video_id"] == "video0" and orig[0]["captions"] == [] and orig[0]["text"] is None
    assert (orig[0]["start_s"], orig[0]["end_s"], orig[0]["category"]) == (137.72, 149.44, 9)
    for f, o in zip(flat, orig[1:], strict=True):
        for key in ("video_id", "source", "start_s", "end_s", "text", "captions", "split", "category",
                    "msrvtt_id", "sen_ids"):
            assert f[key] == o[key], key
    v993 = flat[-1]
    assert (v993["video_id"], v993["start_s"], v993["end_s"]) == ("video993", 0.0, 12.01)
    assert v993["source"] == "https://www.youtube.com/watch?v=VgLiu2KIIfk"
    assert v993["sen_ids"] == [122460] and v993["msrvtt_id"] == 993 and v993["split"] == "train"


def test_msrvtt_split_filters_rows_that_carry_a_split():
    rows, report = ingest_rows(dataset="msrvtt", path=DATA / "msrvtt_original_layout.json", split="val")
    assert rows == [] and report.filtered_by_split == 8
    rows, report = ingest_rows(dataset="msrvtt", path=DATA / "msrvtt_original_layout.json", split="train")
    assert len(rows) == 8 and report.filtered_by_split == 0


def test_msrvtt_parquet_rehost(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    with open(DATA / "msrvtt.hf_alexzigma_viewer_rows.tsv", newline="") as fh:
        recs = list(csv.DictReader(fh, delimiter="\t"))
    for r in recs:  # the HF Parquet has real numeric types
        r["start time"], r["end time"] = float(r["start time"]), float(r["end time"])
        r["sen_id"], r["category"], r["id"] = int(r["sen_id"]), int(r["category"]), int(r["id"])
    pq.write_table(pa.Table.from_pylist(recs), tmp_path / "train-00000.parquet")
    rows = rows_of("msrvtt", str(tmp_path / "train-00000.parquet"))
    assert [r["video_id"] for r in rows] == [r["video_id"] for r in recs]
    assert rows[2]["end_s"] == 57.2 and rows[2]["text"] == "a few persons sking on snow down the hill"


def test_videoinstruct_suffix_removed_text_otherwise_verbatim():
    rows = rows_of("videoinstruct", "videoinstruct100k.quoted_records.json")
    assert [r["video_id"] for r in rows] == ["v_GqWH2IYPw6U", "v_k_ZXmr8pmrs"]
    assert rows[0]["source"] == "https://www.youtube.com/watch?v=GqWH2IYPw6U"
    assert rows[1]["source"] == "https://www.youtube.com/watch?v=k_ZXmr8pmrs"
    assert rows[0]["text"].startswith("Of course! The video features various shots of a city")
    assert rows[0]["text"].endswith("making it quite enjoyable to watch.")
    assert "QA_GT" not in rows[0]["text"] and rows[0]["qa_noisy"] == [True] and rows[1]["qa_noisy"] == [False]
    assert rows[0]["questions"] == ["Can you briefly describe the content of the video for me?"]


def test_videoinstruct_groups_pairs_per_video(tmp_path):
    p = tmp_path / "vi.json"
    p.write_text('[{"q": "Q1", "a": "A1\\nQA_GT_caption_based_noisy", "video_id": "v_k_ZXmr8pmrs"},\n'
                 ' {"q": "Q2", "a": "A2 ", "video_id": "v_GqWH2IYPw6U"},\n'
                 ' {"q": "Q3", "a": "  A3", "video_id": "v_k_ZXmr8pmrs"}]')
    rows = rows_of("videoinstruct", str(p))
    assert len(rows) == 2
    assert rows[0]["captions"] == ["A1", "  A3"] and rows[0]["questions"] == ["Q1", "Q3"]
    assert rows[1]["text"] == "A2 "


def test_internvid_timestamps_scores_and_path_rehost():
    rows = rows_of("internvid", "internvid_flt.jsonl")
    a, b = rows
    assert (a["video_id"], a["start_s"], a["end_s"]) == ("qJrOyggIB-w", 453.689, 471.085)
    assert a["source"] == "https://www.youtube.com/watch?v=qJrOyggIB-w"
    assert (a["aesthetic_score"], a["umt_score"]) == (4.29296875, 0.4501953125)
    assert a["text"] == "a screen shot of heroes of the storm with people in action"
    assert b["source"] == "videos/qJrOyggIB-w.mp4" and b["video_id"] == "qJrOyggIB-w"
    assert (a["clip_id"], b["clip_id"]) == ("qJrOyggIB-w-0000", "qJrOyggIB-w-0001")


@pytest.mark.parametrize("subset,text,extra", [
    ("pretrain", "妈妈给宝宝听胎心，看看宝宝是怎么做的，太调皮了", {}),
    ("classification", "兔宝宝刚出生，为什么兔妈妈要把它们吃掉？看完涨见识了", {"label": "宠物"}),
    ("retrieval", "身穿黑色上衣戴着头盔的女子在路上骑着摩托车四周还停放了一些车", {}),
    ("captioning", "穿白色球服的女生高高跳起，接住了球。", {}),
])
def test_youku_mplug_subsets(subset, text, extra):
    (row,) = rows_of("youku-mplug", f"youku_mplug_{subset}.csv")
    assert row["subset"] == subset and row["text"] == text and row["captions"] == [text]
    assert row["source"].startswith("videos/") and row["video_id"] == Path(row["source"]).stem
    for k, v in extra.items():
        assert row[k] == v


def test_youku_mplug_caption_list_literal_and_plain_string(tmp_path):
    p = tmp_path / "cap.csv"
    p.write_text("video_id:FILE,golden_caption\nvideos/caption/a.mp4,\"['一', '二']\"\nvideos/caption/b.mp4, 三 \n",
                 encoding="utf-8")
    a, b = rows_of("youku-mplug", str(p))
    assert a["captions"] == ["一", "二"] and a["text"] == "一"
    assert b["text"] == " 三 "  # verbatim, whitespace included


def test_shot2story_meta_csv_spans():
    rows = rows_of("shot2story", "shot2story_20k_meta.head6.csv")
    assert len(rows) == 6
    r = rows[0]
    assert (r["clip_id"], r["video_id"], r["clip_index"]) == ("LEwayCpIk20.78", "LEwayCpIk20", 78)
    assert (r["start_s"], r["end_s"]) == (730.47, 743.49)
    assert r["source"] == "https://www.youtube.com/watch?v=LEwayCpIk20"
    assert r["categories"] == ["Film & Animation"]


def test_shot2story_annotations_need_fps_and_convert_frames():
    with pytest.raises(MetadataError, match="--fps"):
        ingest_rows(dataset="shot2story", path=DATA / "shot2story_annotations.constructed.json")
    rows = rows_of("shot2story", "shot2story_annotations.constructed.json", fps="30000/1001")
    assert [r["clip_id"] for r in rows] == ["LEwayCpIk20.78-0000", "LEwayCpIk20.78-0001", "R2-Usq--J3U.2-0000"]
    s = rows[1]
    assert (s["start_frame"], s["end_frame"]) == (150, 390)
    assert (s["start_s"], s["end_s"]) == (5.005, 13.013)  # 150 * 1001 / 30000, 390 * 1001 / 30000
    assert s["source"] == "LEwayCpIk20.78.mp4" and s["shot_file"] == "LEwayCpIk20.78_150_390.mp4"
    assert rows[0]["text"] == "CONSTRUCTED caption of shot one.  "  # trailing spaces kept
    assert s["audio_caption"] == "CONSTRUCTED narration two" and s["asr"] == "CONSTRUCTED asr two"
    assert s["whole_caption"] == "CONSTRUCTED summary: two shots." and s["youtube_id"] == "LEwayCpIk20"
    rows25 = rows_of("shot2story", "shot2story_annotations.constructed.json", fps=25)
    assert rows25[2]["end_s"] == 581 / 25


@pytest.mark.parametrize("dataset,name,n", [
    ("panda70m", "panda70m_validation.head6.csv", 18), ("panda70m", "panda70m_7col.csv", 3),
    ("webvid", "webvid10m.head10.csv", 10), ("msrvtt", "msrvtt.grouped_test.head2.json", 2),
    ("msrvtt", "msrvtt_original_layout.json", 8), ("videoinstruct", "videoinstruct100k.quoted_records.json", 2),
    ("internvid", "internvid_flt.jsonl", 2), ("youku-mplug", "youku_mplug_captioning.csv", 1),
    ("shot2story", "shot2story_20k_meta.head6.csv", 6),
])
def test_manifest_round_trip_keeps_text_verbatim(tmp_path, dataset, name, n):
    out = tmp_path / "m.parquet"
    report = ingest(dataset=dataset, path=DATA / name, out=out)
    assert report.clips == n and report.num_errors == 0
    back = read_manifest(out)
    direct, _ = ingest_rows(dataset=dataset, path=DATA / name)
    assert len(back) == n
    for a, b in zip(back, direct, strict=True):
        for key in ("clip_id", "video_id", "source", "text", "captions", "start_s", "end_s", "dataset", "split"):
            assert a[key] == b[key], key
        assert a["error"] is None and a["license"]


def test_streaming_writer_matches_in_memory_rows(tmp_path, monkeypatch):
    import importlib

    ing = importlib.import_module("soraprep.datasets.ingest")  # the module (the package exports the function)
    monkeypatch.setattr(ing, "CHUNK_ROWS", 4)  # 18 clips -> 5 row groups
    out = tmp_path / "p.parquet"
    ingest(dataset="panda70m", path=DATA / "panda70m_validation.head6.csv", out=out)
    direct, _ = ingest_rows(dataset="panda70m", path=DATA / "panda70m_validation.head6.csv")
    back = read_manifest(out)
    assert [{k: r[k] for k in d} for r, d in zip(back, direct, strict=True)] == direct
    # a column that is null in the whole first chunk and typed later: falls back, loses nothing
    lines = (DATA / "webvid10m.head10.csv").read_text().splitlines()
    src = tmp_path / "webvid.csv"
    with open(src, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(lines[0].split(","))
        for ln in lines[1:5]:
            cells = next(csv.reader([ln]))
            cells[2] = ""
            w.writerow(cells)
        for ln in lines[5:]:
            w.writerow(next(csv.reader([ln])))
    ingest(dataset="webvid", path=src, out=out)
    back = read_manifest(out)
    assert [r["page_idx"] for r in back] == [None] * 4 + [13617, 5032, 873, 27762, 32306, 66015]
    import pyarrow.parquet as pq

    assert str(pq.read_schema(out).field("page_idx").type) == "int64"


def test_msrvtt_jsfusion_split_csvs(tmp_path):
    p = tmp_path / "MSRVTT_JSFUSION_test.csv"
    p.write_text("key,vid_key,video_id,sentence\nret0,msr7579,video7579,a girl wearing red top and black trouser "
                 "is putting a sweater on a dog\nret1,msr7725,video7725,young people sit around the edges of a "
                 "room clapping and raising their arms while others dance in the center during a party\n")
    rows = rows_of("msrvtt", str(p))
    assert [r["video_id"] for r in rows] == ["video7579", "video7725"]
    assert rows[0]["text"].startswith("a girl wearing red top") and rows[0]["source"] == "video7579.mp4"
    assert rows[0]["split"] == "test"
    q = tmp_path / "MSRVTT_train.9k.csv"
    q.write_text("video_id\nvideo0\nvideo1\n")
    rows = rows_of("msrvtt", str(q))
    assert [(r["video_id"], r["text"], r["split"]) for r in rows] == [("video0", None, "train"), ("video1", None, "train")]
