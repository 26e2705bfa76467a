"""The method: motion-textual inversion on a frozen image-to-video diffusion model (SVD via diffusers).

config        InversionConfig, TransferConfig: frozen dataclasses, a docstring per field
identity      a model's provenance string (hub id @ revision, or the sha256 of a local folder)
svd           SVD's building blocks and tiny random pipelines for tests
models        loading a pipeline with from_pretrained, frozen, motion routing installed
routing       which motion tokens each cross-attention layer of the UNet sees
conditioning  what SVD conditions on besides the noisy latents (CLIP image, first frame, ids)
embedding     the (F + 1) x N motion embedding, its initialisation and its safetensors file
inversion     optimising the motion embedding on one reference video (the denoising loss)
sampling      transfer: sampling videos of target images with a motion embedding
gpuplan       FLOPs and activation memory on the meta device: what a GPU needs

May import: mtcore.errors, mtcore.io. Knows nothing of manifests, keys or catalogs.
"""
