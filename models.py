"""A minGPT-style Decision Transformer (Chen et al., 2021): returns-to-go, states, actions -> actions. Also the plain
eager reference (ReferenceDT): the test oracle for the model and the benchmark's baseline."""
from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from numpy.typing import ArrayLike


class BitDropout(nn.Module):
    """nn.Dropout with 15 random bits per element instead of a float: ~2.5x cheaper on a CPU. The drop probability
    is rounded to a multiple of 2^-15 (0.1 -> 0.100006)."""

    def __init__(self, p: float):
        super().__init__()
        self.threshold = round(p * 2**15)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.threshold == 0:
            return x
        n = x.numel()
        bits = torch.empty((n + 1) // 2, dtype=torch.int32, device=x.device).random_()  # (n/2,) 31 random bits each
        bits = bits.view(torch.int16)[:n].view(x.shape) & 0x7FFF  # x's shape: 15 uniform bits per element
        return x * (bits >= self.threshold) * (1.0 / (1.0 - self.threshold / 2**15))


class MaskedCausalAttention(nn.Module):
    """Multi-head self-attention in which each token sees itself and the tokens before it."""

    def __init__(self, embed_dim: int, n_heads: int, dropout: float, max_tokens: int):
        super().__init__()
        assert embed_dim % n_heads == 0, "embed_dim must be divisible by n_heads"
        self.n_heads = n_heads
        self.qkv = nn.Linear(embed_dim, 3 * embed_dim)  # fused query, key, value projection
        self.proj = nn.Linear(embed_dim, embed_dim)
        self.attn_drop = BitDropout(dropout)
        self.resid_drop = BitDropout(dropout)
        self.register_buffer("causal", torch.ones(max_tokens, max_tokens).triu(1).bool(), persistent=False)

    def forward(self, x: torch.Tensor, rows: slice | None = None) -> torch.Tensor:
        """x (B, T, C) -> (B, Tq, C): the outputs of the tokens `rows` (a slice; default all, Tq = T)."""
        B, T, C = x.shape
        nh, hs = self.n_heads, C // self.n_heads
        if rows is None:
            q, k, v = self.qkv(x).view(B, T, 3, nh, hs).permute(2, 0, 3, 1, 4)  # (B, nh, T, hs)
        else:  # queries of the kept tokens only; keys and values of all
            q = F.linear(x[:, rows], self.qkv.weight[:C], self.qkv.bias[:C])  # (B, Tq, C)
            q = q.view(B, -1, nh, hs).transpose(1, 2)  # (B, nh, Tq, hs)
            k, v = F.linear(x, self.qkv.weight[C:], self.qkv.bias[C:]).view(B, T, 2, nh, hs).permute(2, 0, 3, 1, 4)
        causal = self.causal[:T, :T] if rows is None else self.causal[:T, :T][rows]  # (Tq, T), True: may not attend
        if self.training and self.attn_drop.threshold:  # dropout on the attention weights, as GPT-2
            att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(hs))  # (B, nh, Tq, T)
            att = att.masked_fill(causal, float("-inf")).softmax(dim=-1)
            y = self.attn_drop(att) @ v  # (B, nh, Tq, hs)
        elif rows is None:  # the same function, in one fused kernel
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # (B, nh, T, hs)
        else:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=~causal)  # (B, nh, Tq, hs)
        y = y.transpose(1, 2).reshape(B, -1, C)  # (B, Tq, C)
        return self.resid_drop(self.proj(y))


class Block(nn.Module):
    """A pre-LayerNorm transformer block: causal attention, then an MLP, each on a residual."""

    def __init__(self, embed_dim: int, n_heads: int, dropout: float, max_tokens: int):
        super().__init__()
        self.ln_1 = nn.LayerNorm(embed_dim)
        self.attn = MaskedCausalAttention(embed_dim, n_heads, dropout, max_tokens)
        self.ln_2 = nn.LayerNorm(embed_dim)
        self.mlp = nn.Sequential(
            nn.Linear(embed_dim, 4 * embed_dim), nn.GELU(), nn.Linear(4 * embed_dim, embed_dim), BitDropout(dropout))

    def forward(self, x: torch.Tensor, rows: slice | None = None) -> torch.Tensor:
        """x (B, T, C) -> (B, Tq, C): the outputs of the tokens `rows` (a slice; default all)."""
        h = self.ln_1(x)
        x = x if rows is None else x[:, rows]
        x = x + self.attn(h, rows)
        return x + self.mlp(self.ln_2(x))


@dataclass
class DTConfig:
    """Everything DecisionTransformer(config) needs; a policy checkpoint stores it beside the weights."""
    state_dim: int
    act_dim: int
    context_len: int = 20  # K steps: 3K tokens
    max_timestep: int = 1000  # size of the timestep embedding
    embed_dim: int = 128
    n_layers: int = 3
    n_heads: int = 1
    dropout: float = 0.1
    condition_on_return: bool = True  # False: the return-to-go input is zeroed, a behaviour-cloning transformer


class DecisionTransformer(nn.Module):
    """GPT over interleaved (return-to-go, state, action) tokens; predicts a_t from the s_t token. Takes raw env
    states and actions: it holds the data's state mean/std and the action bounds, so a checkpoint is a whole policy."""

    def __init__(self, config: DTConfig, state_mean: ArrayLike | None = None, state_std: ArrayLike | None = None,
                 action_low: ArrayLike | None = None, action_high: ArrayLike | None = None):
        super().__init__()
        self.config = config
        state_dim, act_dim, embed_dim, n_layers = config.state_dim, config.act_dim, config.embed_dim, config.n_layers
        n_heads, dropout, context_len = config.n_heads, config.dropout, config.context_len
        self.state_dim, self.act_dim, self.context_len = state_dim, act_dim, context_len
        self.embed_timestep = nn.Embedding(config.max_timestep, embed_dim)  # omega(t), on all 3 tokens of step t
        self.embed_return = nn.Linear(1, embed_dim)  # phi_g
        self.embed_state = nn.Linear(state_dim, embed_dim)  # phi_s
        self.embed_action = nn.Linear(act_dim, embed_dim)  # phi_a
        self.embed_ln = nn.LayerNorm(embed_dim)
        self.drop = BitDropout(dropout)
        self.blocks = nn.ModuleList([Block(embed_dim, n_heads, dropout, 3 * context_len) for _ in range(n_layers)])
        self.ln_f = nn.LayerNorm(embed_dim)
        self.predict_action = nn.Linear(embed_dim, act_dim)  # read from s_t tokens
        self.predict_state = nn.Linear(embed_dim, state_dim)  # s_{t+1} from a_t tokens (auxiliary)
        self.predict_return = nn.Linear(embed_dim, 1)  # g_{t+1} from a_t tokens (auxiliary)
        as_buffer = lambda x, default: torch.as_tensor(default if x is None else x, dtype=torch.float32)  # noqa: E731
        self.register_buffer("state_mean", as_buffer(state_mean, torch.zeros(state_dim)))
        self.register_buffer("state_std", as_buffer(state_std, torch.ones(state_dim)))
        self.register_buffer("action_low", as_buffer(action_low, -torch.ones(act_dim)))
        self.register_buffer("action_high", as_buffer(action_high, torch.ones(act_dim)))
        self.apply(self._init_weights)
        for name, p in self.named_parameters():  # GPT-2: scale the residual projections by depth
            if name.endswith(("attn.proj.weight", "mlp.2.weight")):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * n_layers))

    @staticmethod
    def _init_weights(module):
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    @property
    def device(self) -> torch.device:
        """Where the policy's tensors live (rollout puts its inputs there)."""
        return self.state_mean.device

    @property
    def last_timestep(self) -> int:
        """The last timestep the policy embeds; later steps are clipped to it, as in training."""
        return self.embed_timestep.num_embeddings - 1

    def norm_state(self, states: torch.Tensor) -> torch.Tensor:
        """Environment state -> the dataset's zero mean, unit std."""
        return (states - self.state_mean) / self.state_std

    def norm_action(self, actions: torch.Tensor) -> torch.Tensor:
        """Environment action -> [-1, 1]."""
        return 2 * (actions - self.action_low) / (self.action_high - self.action_low) - 1

    def unnorm_action(self, actions: torch.Tensor) -> torch.Tensor:
        """[-1, 1] -> environment action."""
        return self.action_low + (actions + 1) / 2 * (self.action_high - self.action_low)

    def forward(self, states: torch.Tensor, actions: torch.Tensor, returns_to_go: torch.Tensor, timesteps: torch.Tensor,
                predict_next: bool = False) -> dict[str, torch.Tensor]:
        """states (B, K, obs), actions (B, K, act), returns_to_go (B, K, 1), timesteps (B, K) -> named predictions:

            action       (B, K, act) a_t from the s_t token, in the env's bounds
            next_state   (B, K, obs) s_{t+1} from the a_t token, normalized     } only with predict_next
            next_return  (B, K, 1)   g_{t+1} from the a_t token                 } (the auxiliary losses)
        """
        B, K, _ = states.shape
        if not self.config.condition_on_return:  # plain BC: every g_t token is the same, it carries no return
            returns_to_go = torch.zeros_like(returns_to_go)
        time = self.embed_timestep(timesteps)  # (B, K, C)
        g = self.embed_return(returns_to_go) + time  # (B, K, C)
        s = self.embed_state(self.norm_state(states)) + time  # (B, K, C)
        a = self.embed_action(self.norm_action(actions)) + time  # (B, K, C)
        x = torch.stack((g, s, a), dim=2).reshape(B, 3 * K, -1)  # (B, 3K, C): g_1, s_1, a_1, g_2, ...
        x = self.drop(self.embed_ln(x))
        for block in self.blocks[:-1]:
            x = block(x)  # (B, 3K, C)
        if not predict_next:  # only the s_t tokens are read: the last block skips the others' queries and MLP
            x = self.ln_f(self.blocks[-1](x, rows=slice(1, None, 3)))  # (B, K, C)
            return {"action": self.unnorm_action(torch.tanh(self.predict_action(x)))}  # (B, K, act)
        x = self.ln_f(self.blocks[-1](x)).reshape(B, K, 3, -1)  # (B, K, [g, s, a], C)
        return {"action": self.unnorm_action(torch.tanh(self.predict_action(x[:, :, 1]))),  # (B, K, act)
                "next_state": self.predict_state(x[:, :, 2]),  # (B, K, obs)
                "next_return": self.predict_return(x[:, :, 2])}  # (B, K, 1)

    def configure_optimizer(self, lr: float, weight_decay: float) -> torch.optim.AdamW:
        """AdamW with weight decay on the weight matrices only (not biases, LayerNorms or embeddings)."""
        decay, no_decay = {}, {}  # {name: parameter}
        for mn, m in self.named_modules():
            for pn, p in m.named_parameters(recurse=False):
                exempt = pn.endswith("bias") or isinstance(m, (nn.LayerNorm, nn.Embedding))
                (no_decay if exempt else decay)[f"{mn}.{pn}" if mn else pn] = p
        groups = [{"params": [p for _, p in sorted(decay.items())], "weight_decay": weight_decay},
                  {"params": [p for _, p in sorted(no_decay.items())], "weight_decay": 0.0}]
        return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.999), foreach=True)


class EMA:
    """A moving average of a model's weights, w <- d w + (1 - d) w_model after each step, d ramped as
    min(d, (1 + n) / (10 + n)) so early evals are not the initial weights'. Its `policy` is evaluated and saved."""

    def __init__(self, model: torch.nn.Module, decay: float):
        self.decay, self.updates = decay, 0
        self.policy = copy.deepcopy(model).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        self.updates += 1
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        torch._foreach_lerp_(list(self.policy.parameters()), list(model.parameters()), 1 - d)

    def state_dict(self) -> dict:
        return {"policy": self.policy.state_dict(), "updates": self.updates}

    def load_state_dict(self, state: dict) -> None:
        self.policy.load_state_dict(state["policy"])
        self.updates = state["updates"]


# The plain eager reference (nn.MultiheadAttention, torch's dropout): the tests' oracle, bench.py's baseline.


class ReferenceBlock(nn.Module):
    """The straightforward transformer block: nn.MultiheadAttention with an explicit causal mask."""

    def __init__(self, embed_dim: int, n_heads: int, dropout: float):
        super().__init__()
        self.ln_1 = nn.LayerNorm(embed_dim)
        self.attn = nn.MultiheadAttention(embed_dim, n_heads, dropout=dropout, batch_first=True)
        self.resid_drop = nn.Dropout(dropout)
        self.ln_2 = nn.LayerNorm(embed_dim)
        self.mlp = nn.Sequential(
            nn.Linear(embed_dim, 4 * embed_dim), nn.GELU(), nn.Linear(4 * embed_dim, embed_dim), nn.Dropout(dropout))

    def forward(self, x: torch.Tensor, rows: slice | None = None) -> torch.Tensor:
        """All tokens' outputs computed, then `rows` kept, as a plain implementation would."""
        T = x.shape[1]
        causal = torch.ones(T, T, dtype=torch.bool, device=x.device).triu(1)  # True = may not attend
        h = self.ln_1(x)
        x = x + self.resid_drop(self.attn(h, h, h, attn_mask=causal, need_weights=False)[0])
        x = x + self.mlp(self.ln_2(x))
        return x if rows is None else x[:, rows]


def reference_state_dict(project_state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A DecisionTransformer's weights under ReferenceDT's names (fused qkv -> in_proj, proj -> out_proj)."""
    return {k.replace("attn.qkv.", "attn.in_proj_").replace("attn.proj.", "attn.out_proj."): v
            for k, v in project_state_dict.items()}


class ReferenceDT(DecisionTransformer):
    """The project's DT with ReferenceBlocks and torch's dropout, from the same initial weights."""

    def __init__(self, config: DTConfig, **normalization: ArrayLike):
        super().__init__(config, **normalization)
        project_init = self.state_dict()
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList([ReferenceBlock(config.embed_dim, config.n_heads, config.dropout)
                                     for _ in range(config.n_layers)])
        self.load_state_dict(reference_state_dict(project_init))

    def load_project_weights(self, model: DecisionTransformer) -> ReferenceDT:
        """Copy a DecisionTransformer's weights."""
        self.load_state_dict(reference_state_dict(model.state_dict()))
        return self


MODELS = {"models.DecisionTransformer": DecisionTransformer, "models.ReferenceDT": ReferenceDT}  # model.implementation


def policy_checkpoint(model: DecisionTransformer, implementation: str, env_id: str) -> dict:
    """best.pt / final.pt: the model's config and weights, plain values and tensors only."""
    return {"env_id": env_id, "model_class": implementation, "model_config": asdict(model.config),
            "model": model.state_dict()}


def policy_from_checkpoint(checkpoint: dict) -> DecisionTransformer:
    """The model a policy_checkpoint dict describes, in eval mode."""
    name = checkpoint.get("model_class", "models.DecisionTransformer")
    if name not in MODELS:
        raise ValueError(f"unknown model class {name!r}; this project builds {', '.join(MODELS)}")
    model = MODELS[name](DTConfig(**checkpoint["model_config"]))
    model.load_state_dict(checkpoint["model"])  # the normalization buffers too
    return model.eval()
