#!/usr/bin/env python3
"""Train the bundled tiny-sd preset and its tiny VAE on a procedural data set, on the CPU.

Why: with random weights a tiny pipeline's image is decided by its VAE and the initial
noise, so a broken UNet still scores a high SSIM and the fidelity gate is blind. Trained
weights make the prompt, and therefore the denoiser, decide the picture.

What: 64x64 images of coloured shapes on coloured backgrounds, captioned
"a red circle on a white background". Three stages, each deterministic:
  1. AutoencoderKL (scale factor 4) on the images;
  2. the text-conditioned UNet jointly with the CLIP text encoder on the VAE latents
     (captions dropped 10% of the time, so classifier-free guidance works);
  3. AutoencoderTiny against that VAE's latents (the bundled `tiny-vae`).
The pipeline is written as a diffusers folder (safetensors) and the tiny VAE beside it.

    python scripts/train_tiny.py                 # full run, writes the shipped presets
    python scripts/train_tiny.py --quick --out /tmp/x   # a few steps, proves it runs

Needs transformers 5 (it builds the T5 Unigram tokenizer from a vocabulary list); the folders it
writes load on transformers 4.x as well (make_portable).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pytest_diffaccel.models import tiny  # noqa: E402
from pytest_diffaccel.models.loading import CLIP_PREFIX  # noqa: E402

DEFAULT_OUT = ROOT / "pytest_diffaccel" / "models" / "presets"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="folder that receives tiny-sd/ and tiny-vae/")
    parser.add_argument("--samples", type=int, default=4096)
    parser.add_argument("--vae-steps", type=int, default=600)
    parser.add_argument("--vae-batch", type=int, default=16)
    parser.add_argument("--vae-decoder-steps", type=int, default=1000, help="then the decoder alone (encoder frozen)")
    parser.add_argument("--vae-decoder-lr", type=float, default=1e-3)
    parser.add_argument("--unet-steps", type=int, default=4000)
    parser.add_argument("--unet-batch", type=int, default=32)
    parser.add_argument("--unet-lr", type=float, default=1e-3)
    parser.add_argument("--tiny-vae-steps", type=int, default=3000)
    parser.add_argument("--sdxl-steps", type=int, default=4000)
    parser.add_argument("--flux-steps", type=int, default=8000)
    parser.add_argument(
        "--offset-noise",
        type=float,
        default=0.1,
        help="UNets: per-channel constant added to the training noise, so the denoiser learns to set the "
        "background colour itself",
    )
    parser.add_argument("--min-snr", type=float, default=5.0, help="UNets: min-SNR-gamma loss weighting (0: none)")
    parser.add_argument("--ema", type=float, default=0.999, help="the saved weights: an exponential moving average")
    parser.add_argument("--raw-too", action="store_true", help="also save the last (not averaged) weights, *-raw/")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2, help="fixed so that reruns are bit-identical")
    parser.add_argument("--quick", action="store_true", help="a handful of steps on a small data set")
    parser.add_argument(
        "--score-only",
        action="store_true",
        help="train nothing: score the presets in --out (caption score at each --score-seeds seed) and add "
        "the scores to its TRAINING.json",
    )
    parser.add_argument("--score-seeds", default="0,1,2,3", help="with --score-only: the seeds scored")
    parser.add_argument(
        "--stages",
        default="vae,unet,tiny-vae,sdxl,flux",
        help="comma-separated stages to train; the others are loaded from --out (each stage has its own seed, "
        "so a partial rerun gives the same weights as a full one)",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.samples, args.vae_steps, args.unet_steps, args.tiny_vae_steps = 64, 3, 3, 3
        args.vae_decoder_steps = 3
        args.sdxl_steps = args.flux_steps = 3
        args.vae_batch = args.unet_batch = 8
    return args


def log(message: str) -> None:
    print(f"[train_tiny {time.strftime('%H:%M:%S')}] {message}", flush=True)


def lr_at(step: int, base: float, total: int, warmup: int = 50) -> float:
    import math

    if step < warmup:
        return base * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return base * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def optimize(optimizer, loss, params=None) -> None:  # type: ignore[no-untyped-def]
    """One optimizer step; with ``params``, gradients are clipped to norm 1 first."""
    import torch

    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if params is not None:
        torch.nn.utils.clip_grad_norm_(params, 1.0)
    optimizer.step()


def set_lr(optimizer, step: int, base: float, total: int) -> None:  # type: ignore[no-untyped-def]
    for group in optimizer.param_groups:
        group["lr"] = lr_at(step, base, total)


def batches(count: int, batch: int, steps: int, generator: object):
    import torch

    assert isinstance(generator, torch.Generator)
    for _ in range(steps):
        yield torch.randint(0, count, (batch,), generator=generator)


def unet_noise(x0, generator, offset: float):  # type: ignore[no-untyped-def]
    """Gaussian noise plus, with ``offset``, one constant per sample and channel ("offset noise").

    The scheduler never reaches zero signal (its last step keeps 0.5% of the image), so a denoiser
    trained on plain noise learns to read a picture's mean colour out of its input, where at
    inference there is none: the old weights drew the background of another caption in two
    pictures out of three. With the offset the mean colour must come from the text."""
    import torch

    noise = torch.randn(x0.shape, generator=generator)
    if offset:
        noise = noise + offset * torch.randn(x0.shape[0], x0.shape[1], 1, 1, generator=generator)
    return noise


def unet_loss(pred, noise, t, alphas, gamma: float):  # type: ignore[no-untyped-def]
    """Epsilon MSE per sample, min-SNR-gamma weighted (Hang et al. 2023: weight min(SNR, gamma) / SNR),
    which turns the effort from the nearly clean steps, where little is left to learn, to the noisy
    ones, which decide what the picture shows."""
    import torch

    error = (pred - noise).pow(2).mean(dim=(1, 2, 3))
    if not gamma:
        return error.mean()
    snr = alphas[t] / (1 - alphas[t])
    return (error * torch.clamp(snr, max=gamma) / snr).mean()


class Ema:
    """An exponential moving average of some modules' parameters (decay warmed up as (1 + step) / (10 + step))."""

    def __init__(self, modules, decay: float) -> None:  # type: ignore[no-untyped-def]
        import copy

        self.decay = decay
        self.step = 0
        self.modules = list(modules)
        self.averages = [copy.deepcopy(m).requires_grad_(False) for m in self.modules]

    def update(self) -> None:
        import torch

        self.step += 1
        decay = min(self.decay, (1 + self.step) / (10 + self.step))
        with torch.no_grad():
            for average, module in zip(self.averages, self.modules, strict=True):
                torch._foreach_lerp_(list(average.parameters()), list(module.parameters()), 1 - decay)

    def result(self, args, name: str):  # type: ignore[no-untyped-def]
        """The averaged modules (eval mode); with --raw-too the trained ones are saved beside them."""
        if not self.decay:
            return [m.eval() for m in self.modules]
        args.raw[name] = [m.eval() for m in self.modules]
        return [m.eval() for m in self.averages]


def train_vae(images, args):  # type: ignore[no-untyped-def]
    import torch
    from diffusers import AutoencoderKL

    torch.manual_seed(args.seed)
    vae = AutoencoderKL(**tiny.vae_config())
    optimizer = torch.optim.AdamW(vae.parameters(), lr=1e-3, weight_decay=0.0)
    generator = torch.Generator().manual_seed(args.seed + 1)
    for step, index in enumerate(batches(len(images), args.vae_batch, args.vae_steps, generator)):
        set_lr(optimizer, step, 1e-3, args.vae_steps)
        x = images[index]
        posterior = vae.encode(x).latent_dist
        z = posterior.mean + posterior.std * torch.randn(posterior.mean.shape, generator=generator)
        recon = vae.decode(z).sample
        kl = posterior.kl().mean() / z[0].numel()
        loss = (recon - x).abs().mean() + (recon - x).pow(2).mean() + 1e-4 * kl
        optimize(optimizer, loss)
        if step % 100 == 0 or step == args.vae_steps - 1:
            log(f"vae step {step}: loss {loss.item():.4f}")
    vae.eval()
    with torch.no_grad():
        posteriors = [vae.encode(images[i : i + 64]).latent_dist for i in range(0, len(images), 64)]
    means = torch.cat([p.mean for p in posteriors])
    if args.vae_decoder_steps:
        tune_decoder(vae, images, means, torch.cat([p.std for p in posteriors]), args)
    scaling = float(1.0 / means.std())
    vae.register_to_config(scaling_factor=scaling)
    log(f"vae latents: std {means.std().item():.3f}, |max| {means.abs().max().item():.2f}, scaling {scaling:.4f}")
    return vae, means


def tune_decoder(vae, images, means, stds, args) -> None:  # type: ignore[no-untyped-def]
    """The VAE's second phase: the encoder, and so the latents, stay as the first phase left them;
    the decoder alone trains on, so that it draws the palette's colours (after the first phase a
    red shape on white came back orange, a yellow one on black too)."""
    import torch

    torch.manual_seed(args.seed + 10)
    params = list(vae.decoder.parameters()) + list(vae.post_quant_conv.parameters())
    optimizer = torch.optim.AdamW(params, lr=args.vae_decoder_lr, weight_decay=0.0)
    generator = torch.Generator().manual_seed(args.seed + 11)
    vae.train()
    for step, index in enumerate(batches(len(images), args.vae_batch, args.vae_decoder_steps, generator)):
        set_lr(optimizer, step, args.vae_decoder_lr, args.vae_decoder_steps)
        x = images[index]
        z = means[index] + stds[index] * torch.randn(means[index].shape, generator=generator)
        recon = vae.decode(z).sample
        loss = (recon - x).abs().mean() + (recon - x).pow(2).mean()
        optimize(optimizer, loss)
        if step % 100 == 0 or step == args.vae_decoder_steps - 1:
            log(f"vae decoder step {step}: loss {loss.item():.4f}")
    vae.eval()


def train_unet(latents, captions, args):  # type: ignore[no-untyped-def]
    import torch
    from diffusers import DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    torch.manual_seed(args.seed + 2)
    tokenizer = CLIPTokenizer.from_pretrained(args.tokenizer_dir)
    text_encoder = CLIPTextModel(CLIPTextConfig(**tiny.text_encoder_config(len(tokenizer))))
    unet = UNet2DConditionModel(**tiny.unet_config())
    noise_scheduler = DDPMScheduler(**tiny.scheduler_config())
    alphas = noise_scheduler.alphas_cumprod

    def ids(texts: list[str]) -> torch.Tensor:
        return tokenizer(
            texts, padding="max_length", max_length=tiny.TEXT_LENGTH, truncation=True, return_tensors="pt"
        ).input_ids

    caption_ids = ids(captions)
    empty_ids = ids([""])
    params = list(unet.parameters()) + list(text_encoder.parameters())
    optimizer = torch.optim.AdamW(params, lr=args.unet_lr, weight_decay=1e-4)
    ema = Ema([unet, text_encoder], args.ema)
    generator = torch.Generator().manual_seed(args.seed + 3)
    for step, index in enumerate(batches(len(latents), args.unet_batch, args.unet_steps, generator)):
        set_lr(optimizer, step, args.unet_lr, args.unet_steps)
        x0 = latents[index]
        tokens = caption_ids[index].clone()
        drop = torch.rand(len(index), generator=generator) < 0.1
        tokens[drop] = empty_ids
        noise = unet_noise(x0, generator, args.offset_noise)
        t = torch.randint(0, noise_scheduler.config.num_train_timesteps, (len(index),), generator=generator)
        a = alphas[t].view(-1, 1, 1, 1)
        noisy = a.sqrt() * x0 + (1 - a).sqrt() * noise
        hidden = text_encoder(tokens)[0]
        pred = unet(noisy, t, hidden).sample
        loss = unet_loss(pred, noise, t, alphas, args.min_snr)
        optimize(optimizer, loss, params)
        ema.update()
        if step % 100 == 0 or step == args.unet_steps - 1:
            log(f"unet step {step}: loss {loss.item():.4f}")
    unet, text_encoder = ema.result(args, "tiny-sd")
    return unet, text_encoder, tokenizer


def train_tiny_vae(images, latents, vae, args):  # type: ignore[no-untyped-def]
    """AutoencoderTiny against the VAE's *scaled* latents (unit variance, scaling_factor 1.0): the
    pipeline divides by the tiny VAE's own scaling factor, and TAESD's decoder squashes its input
    with tanh(x / 3) * 3, so it must see latents of about unit scale.

    The decoder is distilled from the VAE's decoder on latents jittered around the data set's
    (the denoiser's latents are never exactly on the data manifold), so that swapping it in
    gives a faithful, not identical, picture; the encoder learns the VAE's latents."""
    import torch
    from diffusers import AutoencoderTiny

    torch.manual_seed(args.seed + 4)
    scaling = float(vae.config.scaling_factor)
    tvae = AutoencoderTiny(**tiny.tiny_vae_config(1.0))
    optimizer = torch.optim.AdamW(tvae.parameters(), lr=1e-3)
    generator = torch.Generator().manual_seed(args.seed + 5)
    for step, index in enumerate(batches(len(images), args.vae_batch, args.tiny_vae_steps, generator)):
        set_lr(optimizer, step, 1e-3, args.tiny_vae_steps)
        x, z = images[index], latents[index]
        jitter = torch.rand(len(index), 1, 1, 1, generator=generator) * 0.5
        z_in = z + jitter * torch.randn(z.shape, generator=generator)
        with torch.no_grad():
            target = vae.decode(z_in / scaling).sample.clamp(-1, 1)
        decoded = tvae.decoder(z_in)
        encoded = tvae.encoder(x)
        loss = (decoded - target).abs().mean() + (decoded - target).pow(2).mean() + (encoded - z).pow(2).mean()
        optimize(optimizer, loss)
        if step % 100 == 0 or step == args.tiny_vae_steps - 1:
            log(f"tiny-vae step {step}: loss {loss.item():.4f}")
    return tvae.eval()


def _relative(path: Path) -> str:
    try:
        return path.resolve().relative_to(ROOT).as_posix()
    except ValueError:
        return str(path)


def _clip_pair(tokenizer, vocab_size: int):  # type: ignore[no-untyped-def]
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    config = tiny.text_encoder_config(vocab_size)
    return CLIPTextModel(CLIPTextConfig(**config)), CLIPTextModelWithProjection(CLIPTextConfig(**config))


def train_sdxl(latents, captions, args):  # type: ignore[no-untyped-def]
    """tiny-sdxl: SDXL's two text encoders (penultimate hidden states side by side, pooled text
    embeds), text_time conditioning, zeroed embeddings for the unconditional branch (SDXL's
    force_zeros_for_empty_prompt)."""
    import torch
    from diffusers import DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTokenizer

    torch.manual_seed(args.seed + 6)
    tokenizer = CLIPTokenizer.from_pretrained(args.tokenizer_dir)
    text_encoder, text_encoder_2 = _clip_pair(tokenizer, len(tokenizer))
    unet = UNet2DConditionModel(**tiny.sdxl_unet_config())
    alphas = DDPMScheduler(**tiny.scheduler_config()).alphas_cumprod
    ids = tokenizer(captions, padding="max_length", max_length=tiny.TEXT_LENGTH, truncation=True, return_tensors="pt")
    caption_ids = ids.input_ids
    time_ids = torch.tensor([tiny.SDXL_TIME_IDS], dtype=torch.float32)
    params = list(unet.parameters()) + list(text_encoder.parameters()) + list(text_encoder_2.parameters())
    optimizer = torch.optim.AdamW(params, lr=args.unet_lr, weight_decay=1e-4)
    ema = Ema([unet, text_encoder, text_encoder_2], args.ema)
    generator = torch.Generator().manual_seed(args.seed + 7)
    for step, index in enumerate(batches(len(latents), args.unet_batch, args.sdxl_steps, generator)):
        set_lr(optimizer, step, args.unet_lr, args.sdxl_steps)
        x0 = latents[index]
        tokens = caption_ids[index]
        keep = (torch.rand(len(index), generator=generator) >= 0.1).float()
        first = text_encoder(tokens, output_hidden_states=True).hidden_states[-2]
        second = text_encoder_2(tokens, output_hidden_states=True)
        embeds = torch.cat([first, second.hidden_states[-2]], dim=-1) * keep.view(-1, 1, 1)
        pooled = second.text_embeds * keep.view(-1, 1)
        noise = unet_noise(x0, generator, args.offset_noise)
        t = torch.randint(0, 1000, (len(index),), generator=generator)
        a = alphas[t].view(-1, 1, 1, 1)
        noisy = a.sqrt() * x0 + (1 - a).sqrt() * noise
        conditions = {"text_embeds": pooled, "time_ids": time_ids.repeat(len(index), 1)}
        pred = unet(noisy, t, embeds, added_cond_kwargs=conditions).sample
        loss = unet_loss(pred, noise, t, alphas, args.min_snr)
        optimize(optimizer, loss, params)
        ema.update()
        if step % 100 == 0 or step == args.sdxl_steps - 1:
            log(f"sdxl unet step {step}: loss {loss.item():.4f}")
    unet, text_encoder, text_encoder_2 = ema.result(args, "tiny-sdxl")
    return unet, text_encoder, text_encoder_2, tokenizer


def train_flux(latents, captions, args):  # type: ignore[no-untyped-def]
    """tiny-flux: a Flux transformer trained with the flow-matching objective on packed latents,
    conditioned on a tiny T5 (sequence) and the CLIP pooled output, like FluxPipeline calls it."""
    import torch
    from diffusers import FluxPipeline, FluxTransformer2DModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer, T5Config, T5EncoderModel, T5Tokenizer

    torch.manual_seed(args.seed + 8)
    tokenizer = CLIPTokenizer.from_pretrained(args.tokenizer_dir)
    tokenizer_2 = T5Tokenizer(vocab=tiny.t5_vocab(), extra_ids=0, model_max_length=tiny.T5_LENGTH)
    text_encoder = CLIPTextModel(CLIPTextConfig(**tiny.text_encoder_config(len(tokenizer))))
    text_encoder_2 = T5EncoderModel(T5Config(**tiny.t5_config(len(tokenizer_2))))
    transformer = FluxTransformer2DModel(**tiny.flux_transformer_config())
    clip_ids = tokenizer(
        captions, padding="max_length", max_length=tiny.TEXT_LENGTH, truncation=True, return_tensors="pt"
    ).input_ids
    t5_ids = tokenizer_2(
        captions, padding="max_length", max_length=tiny.T5_LENGTH, truncation=True, return_tensors="pt"
    ).input_ids
    batch, channels, height, width = args.unet_batch, latents.shape[1], latents.shape[2], latents.shape[3]
    img_ids = FluxPipeline._prepare_latent_image_ids(batch, height // 2, width // 2, "cpu", torch.float32)
    txt_ids = torch.zeros(tiny.T5_LENGTH, 3)
    params = list(transformer.parameters()) + list(text_encoder.parameters()) + list(text_encoder_2.parameters())
    optimizer = torch.optim.AdamW(params, lr=args.unet_lr, weight_decay=1e-4)
    ema = Ema([transformer, text_encoder, text_encoder_2], args.ema)
    generator = torch.Generator().manual_seed(args.seed + 9)
    for step, index in enumerate(batches(len(latents), batch, args.flux_steps, generator)):
        set_lr(optimizer, step, args.unet_lr, args.flux_steps)
        x0 = latents[index]
        pooled = text_encoder(clip_ids[index]).pooler_output
        sequence = text_encoder_2(t5_ids[index])[0]
        noise = torch.randn(x0.shape, generator=generator)
        sigma = torch.sigmoid(torch.randn(len(index), generator=generator))  # logit-normal, as SD3/Flux train
        noisy = (1 - sigma.view(-1, 1, 1, 1)) * x0 + sigma.view(-1, 1, 1, 1) * noise
        packed = FluxPipeline._pack_latents(noisy, len(index), channels, height, width)
        target = FluxPipeline._pack_latents(noise - x0, len(index), channels, height, width)
        pred = transformer(
            hidden_states=packed,
            timestep=sigma,
            pooled_projections=pooled,
            encoder_hidden_states=sequence,
            txt_ids=txt_ids,
            img_ids=img_ids,
            return_dict=False,
        )[0]
        loss = (pred - target).pow(2).mean()
        optimize(optimizer, loss, params)
        ema.update()
        if step % 100 == 0 or step == args.flux_steps - 1:
            log(f"flux transformer step {step}: loss {loss.item():.4f}")
    transformer, text_encoder, text_encoder_2 = ema.result(args, "tiny-flux")
    return transformer, text_encoder, text_encoder_2, tokenizer, tokenizer_2


def save_sdxl(out: Path, vae, trained, name: str = "tiny-sdxl") -> None:  # type: ignore[no-untyped-def]
    import copy

    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline

    unet, text_encoder, text_encoder_2, tokenizer = trained
    pipe = StableDiffusionXLPipeline(
        vae=copy.deepcopy(vae),
        text_encoder=text_encoder,
        text_encoder_2=text_encoder_2,
        tokenizer=tokenizer,
        tokenizer_2=tokenizer,
        unet=unet,
        scheduler=EulerDiscreteScheduler(**tiny.scheduler_config()),
    )
    pipe.save_pretrained(out / name, safe_serialization=True)
    make_portable(out / name)


def save_flux(out: Path, vae, trained, name: str = "tiny-flux") -> None:  # type: ignore[no-untyped-def]
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline

    transformer, text_encoder, text_encoder_2, tokenizer, tokenizer_2 = trained
    flux_vae = flux_copy(vae)
    pipe = FluxPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(**tiny.flow_scheduler_config()),
        vae=flux_vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        text_encoder_2=text_encoder_2,
        tokenizer_2=tokenizer_2,
        transformer=transformer,
    )
    pipe.save_pretrained(out / name, safe_serialization=True)
    make_portable(out / name)


def flux_copy(vae):  # type: ignore[no-untyped-def]
    import copy

    flux_vae = copy.deepcopy(vae)
    flux_vae.register_to_config(shift_factor=0.0)  # FluxPipeline decodes latents / scale + shift
    return flux_vae


def save_sd(out: Path, vae, unet, text_encoder, tokenizer, name: str = "tiny-sd") -> None:  # type: ignore[no-untyped-def]
    from diffusers import EulerDiscreteScheduler, StableDiffusionPipeline

    pipe = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=EulerDiscreteScheduler(**tiny.scheduler_config()),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(out / name, safe_serialization=True)
    make_portable(out / name)


def score_captions(pipe, info, seed: int = 0) -> tuple[int, int, list[dict]]:  # type: ignore[no-untyped-def]
    """``tiny.caption_score`` of ``pipe`` (a preset, described by ``info``) at its default call and ``seed``:
    one picture per colour x background caption of the data set."""
    import torch

    from pytest_diffaccel.measure import to_numpy_images
    from pytest_diffaccel.noise import float32_noise

    chosen = tiny.caption_samples()
    kwargs = dict(info.call_extra)
    if info.guidance is not None:
        kwargs["guidance_scale"] = info.guidance
    with torch.inference_mode(), float32_noise(pipe):
        images = pipe(
            prompt=[s.caption for s in chosen],
            num_inference_steps=info.steps,
            height=tiny.IMAGE_SIZE,
            width=tiny.IMAGE_SIZE,
            generator=torch.Generator("cpu").manual_seed(seed),
            output_type="pt",
            **kwargs,
        )
    return tiny.caption_score(to_numpy_images(images), chosen)


def caption_scores(out: Path, names: list[str], seed: int = 0) -> dict[str, str]:
    """Each preset's caption score (``score_captions``) at ``seed``, loaded from ``out``."""
    import dataclasses

    from pytest_diffaccel.models import PRESETS
    from pytest_diffaccel.models.loading import ModelSource

    scores = {}
    for name in names:
        info = dataclasses.replace(PRESETS[name.removesuffix("-raw")], path=out / name, tiny_vae=out / "tiny-vae")
        right, total, details = score_captions(ModelSource(info).fresh("cpu"), info, seed)
        scores[name] = f"{right}/{total}"
        wrong = [f"{d['caption']}: {d['colour']} on {d['background']}" for d in details if not d["right"]]
        said = f" (wrong: {'; '.join(wrong[:8])})" if wrong else ""
        log(f"{name}, seed {seed}: {right}/{total} captions drawn right{said}")
    return scores


def make_portable(folder: Path) -> None:
    """Make a pipeline folder written by transformers 5 loadable by transformers 4 as well.

    transformers 5 saves a CLIPTextModel's tensors without the ``text_model.`` prefix that 4.x
    expects (4.x then initialises the whole text encoder at random, with only a warning), and a
    CLIPTokenizer as tokenizer.json alone (4.x's slow CLIPTokenizer needs vocab.json and
    merges.txt), and names a T5 tokenizer "T5Tokenizer" (for 4.x the sentencepiece one, which
    needs a spiece.model; "T5TokenizerFast" reads tokenizer.json in both, as the hub's Flux repos
    name it). Both versions read the prefixed names, the vocabulary files and the fast name.
    """
    from safetensors.torch import load_file, save_file

    index_path = folder / "model_index.json"
    index = json.loads(index_path.read_text())
    fast = {
        name: ["transformers", "T5TokenizerFast"]
        for name, entry in index.items()
        if entry == ["transformers", "T5Tokenizer"]
    }
    if fast:
        index_path.write_text(json.dumps({**index, **fast}, indent=2, sort_keys=True) + "\n")

    for config_path in sorted(folder.glob("*/config.json")):
        if "CLIPTextModel" not in json.loads(config_path.read_text()).get("architectures", []):
            continue
        for path in sorted(config_path.parent.glob("*.safetensors")):
            tensors = load_file(path)
            if all(name.startswith(CLIP_PREFIX) for name in tensors):
                continue
            renamed = {name if name.startswith(CLIP_PREFIX) else CLIP_PREFIX + name: t for name, t in tensors.items()}
            save_file(renamed, path, metadata={"format": "pt"})
    for config_path in sorted(folder.glob("*/tokenizer_config.json")):
        clip = json.loads(config_path.read_text()).get("tokenizer_class") in ("CLIPTokenizer", "CLIPTokenizerFast")
        if clip and not (config_path.parent / "vocab.json").exists():
            tiny.write_tokenizer_vocab(config_path.parent)


def digest(folder: Path) -> str:
    """A digest of the weights themselves: tensor names (without the CLIP prefix), dtypes, shapes and
    bytes, so that it does not depend on the file layout of one library version."""
    import torch
    from safetensors.torch import load_file

    h = hashlib.sha256()
    for path in sorted(folder.rglob("*.safetensors")):
        h.update(path.parent.relative_to(folder).as_posix().encode())
        for name, tensor in sorted(load_file(path).items()):
            h.update(f"{name.removeprefix(CLIP_PREFIX)} {tensor.dtype} {tuple(tensor.shape)}".encode())
            h.update(tensor.contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


def score_only(args: argparse.Namespace) -> int:
    """--score-only: the caption score of every preset in --out at each seed, added to its TRAINING.json."""
    out: Path = args.out
    seeds = [int(seed) for seed in args.score_seeds.split(",") if seed.strip()]
    presets = [p.name for p in sorted(out.iterdir()) if (p / "model_index.json").is_file()]
    by_seed = {str(seed): caption_scores(out, presets, seed) for seed in seeds}
    path = out / "TRAINING.json"
    info = json.loads(path.read_text()) if path.is_file() else {}
    info["caption_score_seeds"] = {name: {seed: by_seed[seed][name] for seed in by_seed} for name in presets}
    info["caption_score_command"] = f"python scripts/train_tiny.py --score-only --score-seeds {args.score_seeds}"
    path.write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
    log(f"caption scores at seeds {seeds} written to {path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True)
    if args.score_only:
        return score_only(args)
    started = time.perf_counter()
    out: Path = args.out
    sd_dir, tvae_dir = out / "tiny-sd", out / "tiny-vae"
    args.tokenizer_dir = sd_dir / "tokenizer"
    args.raw = {}  # preset -> its last (not averaged) trained modules, for --raw-too
    seconds: dict[str, float] = {}
    tiny.write_tokenizer(args.tokenizer_dir)

    images_np, captions = tiny.dataset(args.samples, args.seed)
    images = torch.from_numpy(images_np)
    log(f"data set: {len(captions)} images, e.g. {captions[0]!r}")

    stages = {stage.strip() for stage in args.stages.split(",") if stage.strip()}
    unknown = stages - {"vae", "unet", "tiny-vae", "sdxl", "flux"}
    if unknown:
        raise SystemExit(f"--stages: unknown stage(s) {sorted(unknown)}; use vae, unet, tiny-vae, sdxl, flux")
    if "vae" in stages:
        vae, means = train_vae(images, args)
        seconds["vae"] = round(time.perf_counter() - started, 1)
    else:
        from diffusers import AutoencoderKL

        vae = AutoencoderKL.from_pretrained(sd_dir / "vae").eval()
        with torch.no_grad():
            means = torch.cat([vae.encode(images[i : i + 64]).latent_dist.mean for i in range(0, len(images), 64)])
        log("vae: loaded from " + str(sd_dir / "vae"))
    scaling = float(vae.config.scaling_factor)
    if "vae" in stages:  # the presets share it: those not retrained here get the new one too
        for name, stage in (("tiny-sdxl", "sdxl"), ("tiny-flux", "flux")):
            if stage not in stages and (out / name / "vae").is_dir():
                (vae if name == "tiny-sdxl" else flux_copy(vae)).save_pretrained(
                    out / name / "vae", safe_serialization=True
                )
    if "sdxl" in stages:
        mark = time.perf_counter()
        trained = train_sdxl(means * scaling, captions, args)
        save_sdxl(out, vae, trained)
        if args.raw_too:
            save_sdxl(out, vae, (*args.raw["tiny-sdxl"], *trained[3:]), "tiny-sdxl-raw")
        seconds["sdxl"] = round(time.perf_counter() - mark, 1)
    if "flux" in stages:
        mark = time.perf_counter()
        trained = train_flux(means * scaling, captions, args)
        save_flux(out, vae, trained)
        if args.raw_too:
            save_flux(out, vae, (*args.raw["tiny-flux"], *trained[3:]), "tiny-flux-raw")
        seconds["flux"] = round(time.perf_counter() - mark, 1)
    if "unet" in stages:
        mark = time.perf_counter()
        unet, text_encoder, tokenizer = train_unet(means * scaling, captions, args)
        if args.raw_too:
            save_sd(out, vae, *args.raw["tiny-sd"], tokenizer, "tiny-sd-raw")
        seconds["unet"] = round(time.perf_counter() - mark, 1)
    else:
        from diffusers import UNet2DConditionModel
        from transformers import CLIPTextModel, CLIPTokenizer

        unet = UNet2DConditionModel.from_pretrained(sd_dir / "unet").eval()
        text_encoder = CLIPTextModel.from_pretrained(sd_dir / "text_encoder").eval()
        tokenizer = CLIPTokenizer.from_pretrained(args.tokenizer_dir)
        log("unet and text encoder: loaded from " + str(sd_dir))
    if "tiny-vae" in stages:
        mark = time.perf_counter()
        tvae = train_tiny_vae(images, means * scaling, vae, args)
        tvae.save_pretrained(tvae_dir, safe_serialization=True)
        seconds["tiny-vae"] = round(time.perf_counter() - mark, 1)

    save_sd(out, vae, unet, text_encoder, tokenizer)
    presets = [p.name for p in sorted(out.iterdir()) if (p / "model_index.json").is_file()]
    info = {
        "trained_by": "scripts/train_tiny.py",
        "args": {k: _relative(v) if isinstance(v, Path) else v for k, v in vars(args).items() if k != "raw"},
        "torch": torch.__version__,
        "seconds": round(time.perf_counter() - started, 1),
        "stage_seconds": seconds,
        "caption_score": {} if args.quick else caption_scores(out, presets),
        "sha256_16": {p.name: digest(p) for p in sorted(out.iterdir()) if p.is_dir()},
    }
    (out / "TRAINING.json").write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
    log(f"wrote {sd_dir} and {tvae_dir} in {info['seconds']} s; digests {info['sha256_16']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
