"""Attention fusion: learn, from labels, how much each block of layer features matters.

Each block of ``X`` (one stored layer) is standardised and projected to a common
width; a learned query attends over the block tokens (or an ELMo-style scalar mix
weighs them), and a softmax classifier trained jointly on the labels shapes the
fused vector. :meth:`AttentionFusion.transform` returns that vector for any head.

torch is imported only inside the methods that need it, so importing this module
(and the rest of :mod:`heads`) works without torch.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

import numpy as np
from sklearn.base import BaseEstimator, ClassNamePrefixFeaturesOutMixin, TransformerMixin
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import LabelEncoder
from sklearn.utils import check_random_state
from sklearn.utils.multiclass import check_classification_targets

from .errors import HeadDataError
from sklearn.utils.validation import check_is_fitted, validate_data
from threadpoolctl import threadpool_limits

from heads._blocks import block_slices, check_blocks, standardize_stats
from heads.errors import HeadParamError
from heads.onnx_graph import IR_VERSION, Context, Converter, Graph, Piece

__all__ = ["AttentionFusion", "ONNX_CONVERTERS"]

_MODES = ("attention", "scalar_mix")
_CHUNK = 8192  # rows per forward pass outside training, bounds peak memory
_TOL = 1e-4  # smallest decrease of the monitored loss that counts as progress
# The query / mix scalars are a handful of global parameters: they must settle on
# the informative blocks before the projections start fitting noise.
_FUSION_LR_MULT = 20.0
# The nets are small (batches of 256 rows, widths ~64): a second OpenMP worker buys
# little, and on a busy machine waiting for it costs a scheduler slice per op (a
# 10,000-row fit took 68 s instead of 5 s on a loaded 2-core box). The cap is set
# with threadpoolctl for the calling thread only, for the duration of fit and
# transform, and restored afterwards; torch.set_num_threads is never called.
_TORCH_THREADS = 1
# Tiny data makes one optimiser step per epoch; cap epochs so such fits stay fast.
_TINY_MAX_EPOCHS = 60


class AttentionFusion(ClassNamePrefixFeaturesOutMixin, TransformerMixin, BaseEstimator):
    """Supervised fusion of feature blocks by attention or a learned scalar mix.

    Every block of columns in ``X`` is z-scored (statistics from :meth:`fit`) and
    projected by its own linear map to width ``dim``; a learned block embedding is
    added, giving one token per block. In ``mode="attention"`` a learned query
    attends over the tokens (one multi-head attention layer, weights per sample);
    in ``mode="scalar_mix"`` a global softmax over learned per-block scalars mixes
    them. A linear softmax classifier on the fused vector is trained jointly with
    cross-entropy (Adam, mini-batches) and early stopping on a stratified
    held-out part of the training data; it is discarded after :meth:`fit`.

    Parameters
    ----------
    blocks : sequence of int or None, default=None
        Widths of the blocks laid side by side in ``X`` (they must sum to
        ``X.shape[1]``). ``None`` treats the whole of ``X`` as one block.
    dim : int, default=64
        Width of the block tokens and of the fused output.
    n_heads : int, default=4
        Attention heads; must divide ``dim``. Unused when ``mode="scalar_mix"``.
    mode : {"attention", "scalar_mix"}, default="attention"
        How the block tokens are combined.
    max_epochs : int, default=200
        Most passes over the training part of the data. When the training part
        fits in one mini-batch (tiny data, one optimiser step per epoch), at most
        ``max(60, 2 * patience)`` epochs are run, which keeps such fits fast.
    patience : int, default=10
        Epochs without improvement of the monitored loss before training stops
        (each such epoch also halves the learning rates); the parameters of the
        best epoch are kept.
    validation_fraction : float, default=0.15
        Share of the data passed to :meth:`fit` held out (stratified) for early
        stopping. When it is 0, or too few samples per class allow no stratified
        split, the training loss is monitored instead.
    lr : float, default=1e-2
        Adam learning rate of the projections and the classifier; the few fusion
        parameters (query, block embeddings, mix scalars) use 20 times this, so
        they settle on the informative blocks before the projections fit noise.
    weight_decay : float, default=1e-4
        Adam weight decay (L2 penalty).
    batch_size : int, default=256
        Mini-batch size.
    random_state : int, RandomState instance or None, default=0
        Seeds the parameter initialisation, the validation split and the
        shuffling. An int makes :meth:`fit` deterministic. Only local generators
        are used: torch's global random state is left as it was.

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
        Class labels seen in :meth:`fit`.
    blocks_ : tuple of int
        Validated block widths.
    mean_ : ndarray of shape (n_features_in_,)
        Per-feature mean used for standardisation.
    scale_ : ndarray of shape (n_features_in_,)
        Per-feature standard deviation used for standardisation.
    attention_weights_ : ndarray of shape (n_blocks,)
        Mean attention weight per block over the data passed to :meth:`fit`
        (for ``mode="scalar_mix"``, the softmax of the learned scalars); sums to 1.
    n_epochs_ : int
        Epochs run before training stopped.
    best_loss_ : float
        Best monitored loss (validation loss, or training loss without a
        validation split); its parameters are the ones kept.
    module_ : torch.nn.ModuleDict
        The trained network (projections, attention or mix, classifier). It is not saved:
        a saved fusion (skops) holds its parameters as numpy arrays instead, and rebuilds
        the module on the first :meth:`transform` after loading.
    n_features_in_ : int
        Number of features seen during :meth:`fit`.
    feature_names_in_ : ndarray of shape (n_features_in_,)
        Names of features seen during :meth:`fit`, when ``X`` has string column names.

    See Also
    --------
    heads.fusion.ConcatFusion : Unsupervised normalise-weight-concatenate fusion.

    Notes
    -----
    Inside :meth:`fit` and :meth:`transform` the calling thread runs torch on one
    OpenMP thread (set with ``threadpoolctl`` and restored on exit; the process-wide
    ``torch.set_num_threads`` is never touched). The networks are small, and on a
    busy machine a second worker waiting for a core made a 10,000-row fit ~13 times
    slower.

    Tokens are layer-normalised, so a block can be silenced only by the attention
    (or mix) weights, never by shrinking its projection; ``attention_weights_`` is
    the head-averaged attention, so one head of four on a block gives it 0.25.

    Examples
    --------
    >>> import numpy as np
    >>> from heads.attention import AttentionFusion
    >>> rng = np.random.default_rng(0)
    >>> y = rng.integers(0, 2, 200)
    >>> X = np.hstack([rng.normal(size=(200, 4)), y[:, None] + rng.normal(size=(200, 3))])
    >>> fuse = AttentionFusion(blocks=[4, 3], dim=8, n_heads=2).fit(X, y)
    >>> fuse.transform(X).shape
    (200, 8)
    >>> fuse.attention_weights_.shape
    (2,)
    """

    def __init__(
        self,
        blocks: Sequence[int] | None = None,
        dim: int = 64,
        n_heads: int = 4,
        mode: str = "attention",
        max_epochs: int = 200,
        patience: int = 10,
        validation_fraction: float = 0.15,
        lr: float = 1e-2,
        weight_decay: float = 1e-4,
        batch_size: int = 256,
        random_state: int | np.random.RandomState | None = 0,
    ) -> None:
        self.blocks = blocks
        self.dim = dim
        self.n_heads = n_heads
        self.mode = mode
        self.max_epochs = max_epochs
        self.patience = patience
        self.validation_fraction = validation_fraction
        self.lr = lr
        self.weight_decay = weight_decay
        self.batch_size = batch_size
        self.random_state = random_state

    # ------------------------------------------------------------------ fit
    def fit(self, X, y) -> AttentionFusion:
        """Train the projections, the fusion and a throw-away classifier on ``(X, y)``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Training features, blocks side by side.
        y : array-like of shape (n_samples,)
            Class labels (ints or strings), at least two distinct classes.

        Returns
        -------
        self : AttentionFusion
            The fitted transformer.

        Raises
        ------
        ValueError
            If a parameter is invalid, ``y`` is missing or has fewer than two
            classes, or the block widths do not sum to ``n_features``.
        """
        self._check_params()
        X, y = validate_data(self, X, y, dtype=[np.float64, np.float32])
        check_classification_targets(y)
        encoder = LabelEncoder().fit(y)
        if len(encoder.classes_) < 2:
            raise HeadDataError(
                f"AttentionFusion needs at least 2 classes in y to learn a fusion; got "
                f"1 class ({encoder.classes_[0]!r})."
            )
        self.classes_ = encoder.classes_
        self.blocks_ = check_blocks(self.blocks, X.shape[1], "AttentionFusion")
        self.mean_, self.scale_ = standardize_stats(X)
        seed = int(check_random_state(self.random_state).randint(np.iinfo(np.int32).max))
        with threadpool_limits(limits=_TORCH_THREADS, user_api="openmp"):
            self._train(self._standardize(X), encoder.transform(y), seed)
        return self

    def _train(self, Z: np.ndarray, codes: np.ndarray, seed: int) -> None:
        """Build and train the network; set ``module_``, ``n_epochs_``, ``best_loss_``, weights."""
        import torch

        train_idx, val_idx = self._split(codes, seed)
        with torch.random.fork_rng(devices=[]):  # seed the init without touching torch's RNG
            torch.manual_seed(seed)
            net = _build_net(self.blocks_, self.dim, self.n_heads, self.mode, len(self.classes_))
        max_epochs = self.max_epochs
        if len(train_idx) <= self.batch_size:  # one step per epoch: tiny data
            max_epochs = min(max_epochs, max(_TINY_MAX_EPOCHS, 2 * self.patience))
        settings = {
            "seed": seed,
            "lr": self.lr,
            "weight_decay": self.weight_decay,
            "batch_size": self.batch_size,
            "patience": self.patience,
            "max_epochs": max_epochs,
        }
        Zt, yt = torch.from_numpy(Z), torch.from_numpy(codes.astype(np.int64))
        slices = block_slices(self.blocks_)
        self.n_epochs_, self.best_loss_ = _train_net(
            net,
            Zt,
            yt,
            torch.from_numpy(train_idx),
            None if val_idx is None else torch.from_numpy(val_idx),
            slices=slices,
            mode=self.mode,
            est=settings,
        )
        self.module_ = net
        total = torch.zeros(len(slices), dtype=torch.float64)
        with torch.no_grad():
            for start in range(0, Zt.shape[0], _CHUNK):
                chunk = Zt[start : start + _CHUNK]
                _, weights = _fuse_forward(net, chunk, slices, self.mode, need_weights=True)
                total += weights.double().sum(0)
        self.attention_weights_ = (total / total.sum()).numpy()

    # ------------------------------------------------------------ transform
    def transform(self, X) -> np.ndarray:
        """Return the fused vector of each row.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features_in_)
            Features laid out as in :meth:`fit`.

        Returns
        -------
        X_fused : ndarray of shape (n_samples, dim), float32
            The attention output (or scalar mix) of the block tokens, computed in
            evaluation mode without gradients.

        Raises
        ------
        sklearn.exceptions.NotFittedError
            If called before :meth:`fit`.
        ValueError
            If ``X`` has a different number of features than in :meth:`fit`.
        """
        check_is_fitted(self)
        X = validate_data(self, X, dtype=[np.float64, np.float32], reset=False)
        import torch

        Zt = torch.from_numpy(self._standardize(X))
        slices = block_slices(self.blocks_)
        out = np.empty((Zt.shape[0], self.dim), dtype=np.float32)
        net = self._net()
        net.eval()
        with torch.no_grad(), threadpool_limits(limits=_TORCH_THREADS, user_api="openmp"):
            for start in range(0, Zt.shape[0], _CHUNK):
                chunk = Zt[start : start + _CHUNK]
                fused, _ = _fuse_forward(net, chunk, slices, self.mode)
                out[start : start + _CHUNK] = fused.numpy()
        return out

    # ---------------------------------------------------------- persistence
    def __getstate__(self) -> dict:
        """The state without the torch module: its parameters travel as numpy arrays.

        A saved head (skops or pickle) then holds numpy arrays only, so loading it needs no
        torch type on the allowlist; the module is rebuilt on the first :meth:`transform`.
        """
        state = super().__getstate__()
        module = state.pop("module_", None)
        if module is not None:
            state["module_state_"] = {name: value.detach().cpu().numpy().copy()
                                      for name, value in module.state_dict().items()}
        return state

    def _net(self):
        """The fitted module, rebuilt from ``module_state_`` after loading."""
        if getattr(self, "module_", None) is None:
            import torch

            net = _build_net(self.blocks_, self.dim, self.n_heads, self.mode, len(self.classes_))
            net.load_state_dict({name: torch.from_numpy(np.array(value))
                                 for name, value in self.module_state_.items()})
            self.module_ = net
        return self.module_

    # -------------------------------------------------------------- helpers
    @property
    def _n_features_out(self) -> int:
        return self.dim

    def _standardize(self, X: np.ndarray) -> np.ndarray:
        Z = (np.asarray(X, dtype=np.float64) - self.mean_) / self.scale_
        return np.ascontiguousarray(Z, dtype=np.float32)

    def _split(self, codes: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray | None]:
        """Stratified train/validation indices, or all rows and ``None`` when no split fits."""
        n = codes.shape[0]
        everything = np.arange(n, dtype=np.int64)
        if self.validation_fraction == 0:
            return everything, None
        n_classes = int(codes.max()) + 1
        n_val = math.ceil(self.validation_fraction * n)
        if n_val < n_classes or n - n_val < n_classes or np.bincount(codes).min() < 2:
            return everything, None
        train_idx, val_idx = train_test_split(
            everything, test_size=n_val, stratify=codes, random_state=seed
        )
        return np.sort(train_idx), np.sort(val_idx)

    def _check_params(self) -> None:
        def positive_int(name: str) -> None:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
                raise HeadParamError(
                    f"AttentionFusion: {name} must be a positive int; got {value!r}."
                )

        for name in ("dim", "n_heads", "max_epochs", "patience", "batch_size"):
            positive_int(name)
        if self.mode not in _MODES:
            raise HeadParamError(
                f"AttentionFusion: mode must be one of {list(_MODES)}; got {self.mode!r}."
            )
        if self.mode == "attention" and self.dim % self.n_heads:
            raise HeadParamError(
                f"AttentionFusion: dim={self.dim} is not divisible by n_heads={self.n_heads}; "
                f"pick n_heads among the divisors of dim."
            )
        vf = self.validation_fraction
        if not isinstance(vf, numbers.Real) or not 0 <= vf < 1:
            raise HeadParamError(
                f"AttentionFusion: validation_fraction must be in [0, 1); got {vf!r}."
            )
        if not isinstance(self.lr, numbers.Real) or not self.lr > 0:
            raise HeadParamError(f"AttentionFusion: lr must be a positive float; got {self.lr!r}.")
        wd = self.weight_decay
        if not isinstance(wd, numbers.Real) or not wd >= 0:
            raise HeadParamError(f"AttentionFusion: weight_decay must be >= 0; got {wd!r}.")

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.required = True
        tags.transformer_tags.preserves_dtype = ["float32"]
        tags.non_deterministic = self.random_state is None
        return tags


# ---------------------------------------------------------------------------
# torch network (torch is imported inside each function, never at module import)
# ---------------------------------------------------------------------------
def _build_net(blocks: Sequence[int], dim: int, n_heads: int, mode: str, n_classes: int):
    """Per-block projections, block embeddings, the fusion and a linear classifier.

    Only stock torch modules are used, so a fitted estimator pickles. Projection
    weights start at unit variance and their output is scaled by ``1 / sqrt(width)``
    in :func:`_fuse_forward` ("equalised learning rate"): Adam then moves a
    1280-wide projection as gently as a 32-wide one.
    """
    import torch
    from torch import nn

    n_blocks = len(blocks)
    net = nn.ModuleDict(
        {
            "proj": nn.ModuleList([nn.Linear(width, dim, bias=False) for width in blocks]),
            "clf": nn.Linear(dim, n_classes),
        }
    )
    for linear in net["proj"]:
        nn.init.normal_(linear.weight, 0.0, 1.0)
    params = nn.ParameterDict({"block_emb": nn.Parameter(0.5 * torch.randn(n_blocks, dim))})
    if mode == "attention":
        net["attn"] = nn.MultiheadAttention(dim, n_heads, batch_first=True)
        params["query"] = nn.Parameter(torch.randn(1, 1, dim))
    else:
        params["mix"] = nn.Parameter(torch.zeros(n_blocks))
        params["gamma"] = nn.Parameter(torch.ones(()))
    net["param"] = params
    return net


def _fuse_forward(net, x, slices: Sequence[slice], mode: str, need_weights: bool = False):
    """Fused vectors ``(n, dim)`` and per-sample block weights ``(n, n_blocks)`` of ``x``.

    The weights are None in attention mode unless ``need_weights`` (asking for
    them takes a slower attention kernel).

    Every token is layer-normalised (no affine), so a block cannot be silenced by
    shrinking its projection: only the attention (or mix) weights can do that,
    which keeps ``attention_weights_`` meaningful.
    """
    import torch
    from torch.nn.functional import layer_norm

    params = net["param"]
    tokens = torch.stack(
        [lin(x[:, sl]) * lin.in_features**-0.5 for lin, sl in zip(net["proj"], slices)], dim=1
    )
    # the width as a plain int (not tokens.shape), so that torch's ONNX exporter sees a constant
    tokens = layer_norm(tokens, (params["block_emb"].shape[1],)) + params["block_emb"]
    if mode == "attention":
        query = params["query"].expand(x.shape[0], 1, -1)
        out, weights = net["attn"](query, tokens, tokens, need_weights=need_weights)
        return out[:, 0], None if weights is None else weights[:, 0]
    mix = torch.softmax(params["mix"], dim=0)
    fused = params["gamma"] * torch.einsum("b,nbd->nd", mix, tokens)
    return fused, mix.expand(x.shape[0], -1)


def _mean_loss(net, Z, y, idx, slices: Sequence[slice], mode: str) -> float:
    """Mean cross-entropy of the classifier on rows ``idx``, without gradients."""
    import torch
    from torch.nn.functional import cross_entropy

    net.eval()
    total = 0.0
    with torch.no_grad():
        for start in range(0, idx.shape[0], _CHUNK):
            rows = idx[start : start + _CHUNK]
            fused, _ = _fuse_forward(net, Z[rows], slices, mode)
            total += float(cross_entropy(net["clf"](fused), y[rows], reduction="sum"))
    return total / idx.shape[0]


def _train_net(net, Z, y, train_idx, val_idx, *, slices, mode, est) -> tuple[int, float]:
    """Adam on mini-batches with early stopping; keeps the best parameters.

    The monitored loss is the validation loss, or the epoch's training loss when
    ``val_idx`` is None. The few fusion parameters (query, block embeddings, mix
    scalars) learn ``_FUSION_LR_MULT`` times faster than the projections, and every
    epoch without progress halves all learning rates. Returns the number of
    epochs run and the best monitored loss.
    """
    import torch
    from torch.nn.functional import cross_entropy

    generator = torch.Generator().manual_seed(est["seed"])
    fusion = list(net["param"].parameters())
    fusion_ids = {id(p) for p in fusion}
    rest = [p for p in net.parameters() if id(p) not in fusion_ids]
    optimizer = torch.optim.Adam(
        [{"params": rest}, {"params": fusion, "lr": est["lr"] * _FUSION_LR_MULT}],
        lr=est["lr"],
        weight_decay=est["weight_decay"],
        fused=True,
    )
    best_loss, best_state, waited, epoch = math.inf, None, 0, 0
    for epoch in range(1, est["max_epochs"] + 1):
        net.train()
        order = train_idx[torch.randperm(train_idx.shape[0], generator=generator)]
        train_loss = 0.0
        for start in range(0, order.shape[0], est["batch_size"]):
            rows = order[start : start + est["batch_size"]]
            fused, _ = _fuse_forward(net, Z[rows], slices, mode)
            loss = cross_entropy(net["clf"](fused), y[rows])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            train_loss += float(loss.detach()) * rows.shape[0]
        if val_idx is None:
            monitored = train_loss / order.shape[0]
        else:
            monitored = _mean_loss(net, Z, y, val_idx, slices, mode)
        if monitored < best_loss - _TOL:
            best_loss, waited = monitored, 0
            best_state = {k: v.detach().clone() for k, v in net.state_dict().items()}
            continue
        waited += 1
        if waited >= est["patience"]:
            break
        for group in optimizer.param_groups:
            group["lr"] *= 0.5
    if best_state is not None:
        net.load_state_dict(best_state)
    net.eval()
    return epoch, best_loss


def _attention_piece(fusion: AttentionFusion, context: Context) -> Piece:
    """The fitted fusion as a piece: input ``x`` float32 ``(N, n_features_in_)``, output ``y`` float32
    ``(N, dim)`` (what :meth:`AttentionFusion.transform` returns), exported with torch's TorchScript
    exporter as the backbones are."""
    check_is_fitted(fusion)
    import io
    import warnings

    import onnx
    import torch

    net = fusion._net()
    net.eval()
    slices = block_slices(fusion.blocks_)
    mode = fusion.mode

    class Fused(torch.nn.Module):
        def __init__(self, mean: np.ndarray, scale: np.ndarray) -> None:
            super().__init__()
            self.net = net
            self.register_buffer("mean", torch.from_numpy(np.asarray(mean, np.float32)))
            self.register_buffer("scale", torch.from_numpy(np.asarray(scale, np.float32)))

        def forward(self, x):
            return _fuse_forward(self.net, (x - self.mean) / self.scale, slices, mode)[0]

    buffer = io.BytesIO()
    fast_path = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)  # its fused kernel has no ONNX export
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            # MultiheadAttention checks its arguments' shapes in Python; the trace keeps them as the
            # constants they are (the batch stays dynamic: tested on other batch sizes)
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            torch.onnx.export(Fused(fusion.mean_, fusion.scale_).eval(), (torch.zeros(2, fusion.n_features_in_),),
                              buffer, input_names=["x"], output_names=["y"],
                              dynamic_axes={"x": {0: "N"}, "y": {0: "N"}}, opset_version=context.opset,
                              do_constant_folding=True, dynamo=False)
    finally:
        torch.backends.mha.set_fastpath_enabled(fast_path)
    model = onnx.load_from_string(buffer.getvalue())
    model.ir_version = IR_VERSION
    return Piece(model, int(fusion.dim))


#: How a fitted :class:`AttentionFusion` converts to ONNX (see :mod:`heads.onnx`).
ONNX_CONVERTERS: dict[type, Converter] = {
    AttentionFusion: lambda fusion: [Graph(lambda context: _attention_piece(fusion, context))],
}
