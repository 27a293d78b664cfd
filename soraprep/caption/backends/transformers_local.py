"""Local Hugging Face transformers backend: a VLM by local path or hub id, batched generation.

Loading: ``AutoProcessor`` + ``AutoModelForImageTextToText`` (LLaVA, LLaVA-NeXT, Qwen2-VL, Qwen2.5-VL,
Video-LLaVA, InternVL, ...), or the model's own class by name (``model_class="LlavaForConditionalGeneration"``);
a text-only checkpoint (no image processor) loads with ``AutoModelForCausalLM`` and serves the summary
step of ``frames+summary``. ``device="auto"`` picks CUDA when present; ``dtype="auto"`` picks bfloat16 on
GPUs that support it, float16 on other GPUs, float32 on CPU. Nothing is downloaded unless the id is not a
local folder and the Hub is reachable (``HF_HUB_OFFLINE=1`` forbids it).

Batching: :meth:`TransformersCaptioner.generate` is called from several pipeline threads at once (one per
clip in flight); a single worker thread owns the model and gathers queued requests into batches of up to
``batch_size`` (waiting at most ``max_wait_s`` for a batch to fill), left-pads them and runs one
``model.generate`` per batch. Requests with and without images are batched separately.

torch and transformers are imported here only (``pip install 'soraprep[caption]'`` plus torch).
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future
from typing import Any

from soraprep.caption.backends import BackendConfigError, VLMReply, VLMRequest

_STOP = object()


def pick_device(device: str) -> str:
    import torch

    if device != "auto":
        return device
    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def pick_dtype(dtype: str, device: str):
    import torch

    if dtype != "auto":
        try:
            return {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
                    "float16": torch.float16, "fp16": torch.float16}[dtype]
        except KeyError:
            raise BackendConfigError(f"unknown dtype {dtype!r}; choose auto, float32, bfloat16 or float16") from None
    if device.startswith("cuda"):
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


class TransformersCaptioner:
    """Caption with a local transformers model; see the module docstring."""

    backend = "transformers"

    def __init__(self, *, model: str, device: str = "auto", dtype: str = "auto", batch_size: int = 4,
                 max_wait_s: float = 0.05, model_class: str | None = None, trust_remote_code: bool = False,
                 attn_implementation: str | None = None, revision: str | None = None) -> None:
        if batch_size < 1:
            raise BackendConfigError(f"batch_size must be >= 1 (got {batch_size})")
        self.model = model
        self.parallelism = batch_size
        self.batch_size = batch_size
        self.max_wait_s = max_wait_s
        try:
            import torch
            import transformers
        except ImportError as exc:
            raise BackendConfigError("the transformers caption backend needs torch and transformers: "
                                     "pip install torch==2.13.0 'soraprep[caption]'") from exc
        self._torch = torch
        self.device = pick_device(device)
        self.dtype = pick_dtype(dtype, self.device)
        self._processor, self._model, self.takes_images = self._load(
            transformers, model_class=model_class, trust_remote_code=trust_remote_code,
            attn_implementation=attn_implementation, revision=revision)
        self._queue: queue.Queue = queue.Queue()
        self._worker: threading.Thread | None = None
        self._start_lock = threading.Lock()

    # -- loading -------------------------------------------------------------------------------------
    def _load(self, transformers, *, model_class, trust_remote_code, attn_implementation, revision):
        common: dict[str, Any] = {"trust_remote_code": trust_remote_code}
        if revision:
            common["revision"] = revision
        try:
            processor = transformers.AutoProcessor.from_pretrained(self.model, **common)
        except Exception as exc:  # noqa: BLE001 - any loading failure is a config error with the model named
            raise BackendConfigError(f"cannot load a processor for {self.model!r}: {type(exc).__name__}: {exc}. "
                                     "Give a local folder with the processor/tokenizer files or a hub id "
                                     "(models with their own code need trust_remote_code, or serve them "
                                     "and use --backend openai).") from exc
        takes_images = hasattr(processor, "image_processor")
        major = int(transformers.__version__.split(".")[0])
        kw = dict(common, **{"dtype" if major >= 5 else "torch_dtype": self.dtype})
        if attn_implementation:
            kw["attn_implementation"] = attn_implementation
        if model_class:
            classes = [getattr(transformers, model_class, None)]
            if classes[0] is None:
                raise BackendConfigError(f"transformers has no class {model_class!r}")
        elif takes_images:
            classes = [transformers.AutoModelForImageTextToText]
        else:
            classes = [transformers.AutoModelForCausalLM]
        try:
            model = classes[0].from_pretrained(self.model, **kw)
        except Exception as exc:  # noqa: BLE001
            raise BackendConfigError(f"cannot load {self.model!r} with {classes[0].__name__}: "
                                     f"{type(exc).__name__}: {exc}") from exc
        model.to(self.device).eval()
        tok = getattr(processor, "tokenizer", processor)
        tok.padding_side = "left"            # decoder-only generation pads on the left
        if tok.pad_token is None:
            tok.pad_token = tok.eos_token
        return processor, model, takes_images

    # -- public --------------------------------------------------------------------------------------
    def generate(self, requests: Sequence[VLMRequest]) -> list[VLMReply]:
        self._ensure_worker()
        futures: list[Future] = []
        for r in requests:
            f: Future = Future()
            self._queue.put((r, f))
            futures.append(f)
        return [f.result() for f in futures]

    def close(self) -> None:
        if self._worker is not None:
            self._queue.put(_STOP)
            self._worker.join()
            self._worker = None

    def __getstate__(self) -> dict[str, Any]:  # pragma: no cover
        raise TypeError("TransformersCaptioner is not picklable: build it inside the worker (Stage.setup)")

    # -- batching ------------------------------------------------------------------------------------
    def _ensure_worker(self) -> None:
        with self._start_lock:
            if self._worker is None:
                self._worker = threading.Thread(target=self._loop, name="caption-transformers", daemon=True)
                self._worker.start()

    def _loop(self) -> None:
        while True:
            first = self._queue.get()
            if first is _STOP:
                return
            batch = [first]
            deadline = time.monotonic() + self.max_wait_s
            stop = False
            while len(batch) < self.batch_size:
                try:
                    item = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    break
                if item is _STOP:
                    stop = True
                    break
                batch.append(item)
            for group in ([b for b in batch if b[0].images], [b for b in batch if not b[0].images]):
                if group:
                    replies = self._run([r for r, _ in group])
                    for (_, fut), rep in zip(group, replies, strict=True):
                        fut.set_result(rep)
            if stop:
                return

    def prompt_text(self, req: VLMRequest) -> str:
        """The model's own chat template when it has one, else a LLaVA-style ``USER: <image> ... ASSISTANT:``."""
        p = self._processor
        if getattr(p, "chat_template", None):
            if self.takes_images:
                content: Any = [{"type": "image"} for _ in req.images] + [{"type": "text", "text": req.prompt}]
                system: Any = [{"type": "text", "text": req.system}] if req.system else None
            else:
                content, system = req.prompt, req.system
            messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": content}]
            try:
                return p.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
            except Exception:  # noqa: BLE001 - some templates refuse a system turn (Gemma-style)
                if not system:
                    raise
                return self.prompt_text(VLMRequest(f"{req.system}\n\n{req.prompt}", req.images, None))
        token = getattr(p, "image_token", None) or "<image>"
        head = f"{req.system}\n" if req.system else ""
        return f"{head}USER: {(token + chr(10)) * len(req.images)}{req.prompt} ASSISTANT:"

    def _run(self, reqs: list[VLMRequest]) -> list[VLMReply]:
        torch = self._torch
        t0 = time.perf_counter()
        if reqs[0].images and not self.takes_images:
            return [VLMReply(None, error_kind="no_vision", error_message=f"{self.model} takes no images")] * len(reqs)
        try:
            texts = [self.prompt_text(r) for r in reqs]
            images = [im for r in reqs for im in r.images]
            if images:
                inputs = self._processor(text=texts, images=images, return_tensors="pt", padding=True)
            else:
                inputs = self._processor(text=texts, return_tensors="pt", padding=True)
            inputs = {k: (v.to(self.device) if hasattr(v, "to") else v) for k, v in inputs.items()}
            if "pixel_values" in inputs:
                inputs["pixel_values"] = inputs["pixel_values"].to(self.dtype)
            temperature = max(r.temperature for r in reqs)
            gen_kw: dict[str, Any] = {"max_new_tokens": max(r.max_new_tokens for r in reqs), "do_sample": temperature > 0}
            if temperature > 0:
                gen_kw["temperature"] = temperature
            tok = getattr(self._processor, "tokenizer", self._processor)
            with torch.inference_mode():
                out = self._model.generate(**inputs, pad_token_id=tok.pad_token_id, **gen_kw)   # (B, L_in + L_new)
            new = out[:, inputs["input_ids"].shape[1]:]                                          # (B, L_new)
            decoded = tok.batch_decode(new, skip_special_tokens=True)
        except torch.cuda.OutOfMemoryError as exc:  # type: ignore[attr-defined]
            return [VLMReply(None, error_kind="oom", error_message=str(exc)[:500])] * len(reqs)
        except Exception as exc:  # noqa: BLE001 - a failing batch fails its rows, not the run
            return [VLMReply(None, error_kind="generation", error_message=f"{type(exc).__name__}: {exc}"[:1000])] * len(reqs)
        latency = time.perf_counter() - t0
        eos = tok.eos_token_id
        n_in = inputs["attention_mask"].sum(dim=1).tolist()                                     # real (unpadded) prompt tokens
        replies = []
        for b, text in enumerate(decoded):
            ids = new[b].tolist()
            n_out = next((k + 1 for k, t in enumerate(ids) if t == eos), len(ids))
            replies.append(VLMReply(text.strip(), tokens_in=int(n_in[b]), tokens_out=n_out, latency_s=latency))
        return replies
