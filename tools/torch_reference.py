"""The PyTorch reference for the training-step benchmark (`ernie_qat.benchmark.training`, engine torch-fp32).

Not part of the library: the benchmark imports this file only when the torch engine is requested.
The network is the benchmark's Paddle classifier rebuilt from `nn.TransformerEncoder` (post-LN,
GELU), trained with AdamW and global-norm clipping.
"""
from typing import Optional

from ernie_qat.benchmark.inference import MAX_POSITIONS, SHAPES
from ernie_qat.benchmark.training import DROPOUT, NUM_LABELS, _random_batch


def torch_step_timer(shape: str, batch: int, seq_len: int, threads: Optional[int] = None):
    """The same step for an equivalent PyTorch model (None if torch does not import); `.model` is exposed."""
    try:
        import torch
        from torch import nn
    except Exception:  # noqa: BLE001 -- a broken install is as absent as a missing one
        return None
    if threads:
        torch.set_num_threads(threads)
    dims = SHAPES[shape]
    hidden, pad = dims["hidden_size"], 0

    class Classifier(nn.Module):
        """ERNIE's layout: embeddings + LayerNorm, post-LN encoder, tanh pooler on token 0, linear classifier."""

        def __init__(self):
            super().__init__()
            self.word, self.position = nn.Embedding(dims["vocab_size"], hidden), nn.Embedding(MAX_POSITIONS, hidden)
            self.token_type, self.norm = nn.Embedding(2, hidden), nn.LayerNorm(hidden, eps=1e-12)
            layer = nn.TransformerEncoderLayer(hidden, dims["num_attention_heads"], dims["intermediate_size"], DROPOUT,
                                               activation="gelu", layer_norm_eps=1e-12, batch_first=True)
            self.encoder = nn.TransformerEncoder(layer, dims["num_hidden_layers"], enable_nested_tensor=False)
            for block in self.encoder.layers:
                block.dropout = nn.Identity()  # ERNIE has no dropout after the FFN activation (act_dropout=0)
            self.pooler, self.classifier = nn.Linear(hidden, hidden), nn.Linear(hidden, NUM_LABELS)
            self.dropout = nn.Dropout(DROPOUT)

        def forward(self, input_ids, token_type_ids):
            positions = torch.arange(input_ids.shape[1], device=input_ids.device)
            x = self.word(input_ids) + self.position(positions) + self.token_type(token_type_ids)
            x = self.encoder(self.dropout(self.norm(x)), src_key_padding_mask=input_ids == pad)
            return self.classifier(self.dropout(torch.tanh(self.pooler(x[:, 0]))))

    ids, types, labels = (torch.from_numpy(a) for a in _random_batch(shape, batch, seq_len))
    torch.manual_seed(0)
    model = Classifier()
    decay = [p for n, p in model.named_parameters() if not ("bias" in n or "norm" in n)]
    rest = [p for n, p in model.named_parameters() if "bias" in n or "norm" in n]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01}, {"params": rest, "weight_decay": 0.0}],
                                  lr=5e-5)

    def step() -> float:
        model.train()
        loss = nn.functional.cross_entropy(model(ids, types), labels)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return float(loss.detach())

    step.model, step.optimizer = model, optimizer
    return step
