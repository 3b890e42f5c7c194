#!/usr/bin/env python3
"""Loads quantsmith outputs with vLLM's own model classes and weight loaders, on a machine
without a GPU, and counts what vLLM would not take.

For each checkpoint (and each MTP draft paired with its serving target) this builds the model
exactly as vLLM's loader does (model class from vLLM's registry, the quantization config vLLM
derives from the checkpoint -- for a draft, from the *target*, as vLLM's speculative loaders
do), feeds every tensor of the checkpoint to the model's own `load_weights`, and reports:

  rejected  tensors load_weights raised on (a KeyError for a parameter vLLM did not allocate,
            a shape assertion, ...), one by one, so that one bad tensor does not hide others
  unfilled  parameters vLLM allocated that no tensor filled (vLLM only checks this itself for
            unquantized models; a quantized model would run on uninitialised memory)
  schemes   what each Linear / FusedMoE was built as (its quant method and scheme class)

How it runs without a GPU: vLLM's CUDA platform class is installed as the current platform,
reporting a device capability (--capability, default 9.0: Hopper) and creating tensors on the
CPU; attention uses a forced backend (--attention-backend). Nothing runs a kernel: weights are
only loaded (process_weights_after_loading, which repacks for kernels, is not called).

Usage:
  check_vllm_load.py MODEL [--draft DRAFT] [--json] ...
    MODEL            a checkpoint directory (the target when --draft is given)
    --draft DRAFT    a standalone MTP draft to load beside MODEL (method "mtp")
Exit code: 0 nothing rejected or unfilled, 1 otherwise, 2 when vLLM cannot build the model.
"""

import argparse
import glob
import json
import os
import socket
import sys
import traceback

os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")
os.environ.setdefault("VLLM_CONFIGURE_LOGGING", "0")


def install_cpu_cuda_platform(capability, attention_backend):
    """vLLM's CUDA platform, reporting `capability`, placing tensors on the CPU, and giving
    every attention layer `attention_backend` without validating it against the head size
    (the tiny model's heads are smaller than any MLA kernel takes; no kernel runs here)."""
    import torch
    import vllm.platforms as platforms
    from vllm.platforms.cuda import NonNvmlCudaPlatform
    from vllm.platforms.interface import DeviceCapability

    major, minor = (int(part) for part in capability.split("."))

    class CpuBuiltCudaPlatform(NonNvmlCudaPlatform):
        device_type = "cpu"

        @classmethod
        def get_device_capability(cls, device_id=0):
            return DeviceCapability(major=major, minor=minor)

        @classmethod
        def get_device_name(cls, device_id=0):
            return "cpu-built"

        @classmethod
        def get_device_total_memory(cls, device_id=0):
            return 1 << 40

        @classmethod
        def is_async_output_supported(cls, enforce_eager):
            return False

        @classmethod
        def get_attn_backend_cls(cls, selected_backend, *args, **kwargs):
            from vllm.v1.attention.backends.registry import AttentionBackendEnum

            return AttentionBackendEnum[attention_backend].get_path()

    platforms.current_platform = CpuBuiltCudaPlatform()

    # Layers create CUDA streams and events for overlapping work (shared experts beside the
    # routed ones); construction only keeps them.
    class Unused:
        def __init__(self, *args, **kwargs):
            pass

    torch.cuda.Stream = Unused
    torch.cuda.Event = Unused
    return platforms.current_platform


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def init_single_process_distributed():
    from vllm.distributed import init_distributed_environment, initialize_model_parallel

    init_distributed_environment(
        world_size=1,
        rank=0,
        distributed_init_method=f"tcp://127.0.0.1:{free_port()}",
        local_rank=0,
        backend="gloo",
    )
    initialize_model_parallel(1, 1)
    # The sparse MLA backends reserve their workspace when a layer is built (the GPU model
    # runner sets the manager up first).
    import torch
    from vllm.v1.worker.workspace import init_workspace_manager

    init_workspace_manager(torch.device("cpu"))


def checkpoint_files(directory):
    """The checkpoint's shards: those its index names, else model*.safetensors (a directory
    may hold other safetensors files, such as the bundled model's reference outputs)."""
    index = os.path.join(directory, "model.safetensors.index.json")
    if os.path.exists(index):
        with open(index) as handle:
            names = sorted(set(json.load(handle)["weight_map"].values()))
        return [os.path.join(directory, name) for name in names]
    return sorted(glob.glob(os.path.join(directory, "model*.safetensors")))


def checkpoint_tensors(directory, keep=None):
    from safetensors import safe_open

    for path in checkpoint_files(directory):
        with safe_open(path, framework="pt") as handle:
            for name in handle.keys():
                if keep is None or keep(name):
                    yield name, handle.get_tensor(name)


def build_configs(args):
    from vllm.config import (
        AttentionConfig,
        CacheConfig,
        DeviceConfig,
        KernelConfig,
        LoadConfig,
        ModelConfig,
        ParallelConfig,
        SchedulerConfig,
        SpeculativeConfig,
        VllmConfig,
    )

    model_config = ModelConfig(
        model=args.model,
        tokenizer=args.model,
        dtype="bfloat16",
        enforce_eager=True,
        max_model_len=args.max_model_len,
        skip_tokenizer_init=True,
        trust_remote_code=False,
    )
    parallel_config = ParallelConfig()
    speculative_config = None
    if args.draft:
        speculative_config = SpeculativeConfig(
            model=args.draft,
            method="mtp",
            num_speculative_tokens=1,
            target_model_config=model_config,
            target_parallel_config=parallel_config,
        )
    attention = {}
    return VllmConfig(
        model_config=model_config,
        cache_config=CacheConfig(block_size=64),
        parallel_config=parallel_config,
        scheduler_config=SchedulerConfig(
            max_num_batched_tokens=args.max_model_len,
            max_model_len=args.max_model_len,
            is_encoder_decoder=False,
        ),
        device_config=DeviceConfig(device="cpu"),
        load_config=LoadConfig(),
        attention_config=AttentionConfig(**attention),
        kernel_config=KernelConfig(moe_backend=args.moe_backend),
        speculative_config=speculative_config,
    )


KV_CACHE_SCALES = ("k_scale", "v_scale", "q_scale", "prob_scale")
INPUT_SCALES = ("input_scale", "input_global_scale")


def defaulted_reason(name, modules, draft_layer=None):
    """Why an unfilled parameter is harmless, or None. vLLM's KV-cache method initialises the
    attention scales itself (to an invalid -1 it replaces with 1.0) when a checkpoint has
    none; a weight-only NVFP4 method (use_a16) allocates activation scales it never reads."""
    owner, _, leaf = name.rpartition(".")
    if draft_layer is not None and (
        name == "model.embed_tokens.weight"
        or name.startswith(f"model.layers.{draft_layer}.shared_head.head.")
    ):
        # load_eagle_model shares the target's embedding and lm_head with a draft that has
        # no copy of its own (vllm/v1/worker/gpu/spec_decode/eagle/utils.py).
        return "shared from the target"
    if leaf in KV_CACHE_SCALES:
        return "KV-cache scale vLLM initialises itself"
    if leaf.endswith(INPUT_SCALES):
        method = getattr(modules.get(owner), "quant_method", None)
        spec = getattr(method, "spec", None)  # ModelOptLinearMethod: (weight, activation)
        if getattr(method, "use_a16", False) or (spec is not None and spec.activation is None):
            return f"activation scale unused by weight-only {type(method).__name__}"
    return None


def describe_scheme(module):
    method = getattr(module, "quant_method", None)
    scheme = getattr(module, "scheme", None)
    if scheme is not None:
        return type(scheme).__name__
    return type(method).__name__ if method is not None else "none"


def build_and_load(vllm_config, model_config, directory, keep, draft_layer=None):
    import torch
    from vllm.config import set_current_vllm_config
    from vllm.model_executor.model_loader.utils import initialize_model
    from vllm.utils.torch_utils import set_default_torch_dtype

    with set_default_torch_dtype(torch.bfloat16), torch.device("cpu"):
        model = initialize_model(vllm_config=vllm_config, model_config=model_config)
    parameters = dict(model.named_parameters())
    filled, rejected = set(), []
    tensors = 0
    with set_current_vllm_config(vllm_config):
        for name, tensor in checkpoint_tensors(directory, keep):
            tensors += 1
            try:
                loaded = model.load_weights(iter([(name, tensor)]))
                filled.update(loaded or ())
            except Exception as error:  # noqa: BLE001 - each is a finding
                message = str(error).split("\n")[0]
                if len(message) > 300:
                    message = message[:300] + " ..."
                rejected.append({"tensor": name, "error": f"{type(error).__name__}: {message}"})
    unfilled, defaulted = [], []
    modules = dict(model.named_modules())
    for name in sorted(parameters):
        if name in filled:
            continue
        why = defaulted_reason(name, modules, draft_layer)
        if why:
            defaulted.append({"parameter": name, "why": why})
        else:
            unfilled.append(name)
    schemes = {}
    for name, module in model.named_modules():
        kind = type(module).__name__
        if "Linear" in kind or "MoE" in kind or "Experts" in kind or kind == "ParallelLMHead":
            if hasattr(module, "quant_method"):
                schemes[name] = f"{kind}: {describe_scheme(module)}"
    return {
        "class": type(model).__name__,
        "tensors": tensors,
        "parameters": len(parameters),
        "rejected": rejected,
        "unfilled": unfilled,
        "defaulted": defaulted,
        "schemes": schemes,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model")
    parser.add_argument("--draft")
    parser.add_argument("--capability", default="9.0")
    parser.add_argument("--attention-backend", default="FLASHMLA_SPARSE")
    parser.add_argument("--moe-backend", default="auto", help="vLLM's --moe-backend")
    parser.add_argument("--max-model-len", type=int, default=256)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--label", default="")
    args = parser.parse_args()

    install_cpu_cuda_platform(args.capability, args.attention_backend)
    import vllm

    try:
        vllm_config = build_configs(args)
        from vllm.config import set_current_vllm_config

        with set_current_vllm_config(vllm_config):
            init_single_process_distributed()
        if args.draft:
            # vLLM builds the target first, in the same process and with the same quantization
            # config object: the target class's packed_modules_mapping (fused_qkv_a_proj,
            # gate_up_proj), which the MTP class does not declare, is still set on it when the
            # draft's fused modules are resolved.
            build_and_load(vllm_config, vllm_config.model_config, args.model, lambda name: False)
            draft_config = vllm_config.speculative_config.draft_model_config
            layer = draft_config.hf_config.num_hidden_layers
            result = build_and_load(
                vllm_config,
                draft_config,
                args.draft,
                lambda name: name.startswith(f"model.layers.{layer}."),
                draft_layer=layer,
            )
        else:
            result = build_and_load(vllm_config, vllm_config.model_config, args.model, None)
    except Exception:  # noqa: BLE001 - vLLM could not build the model at all
        print(f"vLLM {vllm.__version__} cannot build the model:", file=sys.stderr)
        traceback.print_exc()
        return 2
    result.update(
        {
            "label": args.label,
            "vllm": vllm.__version__,
            "model": args.model,
            "draft": args.draft,
            "quantization": vllm_config.model_config.quantization,
        }
    )
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        what = f"{args.draft} beside {args.model}" if args.draft else args.model
        print(
            f"vLLM {vllm.__version__} {result['class']} ({result['quantization'] or 'unquantized'})"
            f" {what}: {result['tensors']} tensors, {len(result['rejected'])} rejected, "
            f"{len(result['unfilled'])} of {result['parameters']} parameters unfilled "
            f"({len(result['defaulted'])} more that vLLM defaults or never reads)"
        )
        for entry in result["rejected"][:10]:
            print(f"  rejected {entry['tensor']}: {entry['error']}")
        for name in result["unfilled"][:10]:
            print(f"  unfilled {name}")
    return 0 if not result["rejected"] and not result["unfilled"] else 1


if __name__ == "__main__":
    sys.exit(main())
