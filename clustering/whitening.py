"""Step 3 of an epoch: PCA-whitening to pca_dim, then L2 normalisation of every row.

Two forms of the PCA: faiss PCAMatrix (the reference's, `pca_method faiss`) and torch (the covariance or
Gram matrix with float32 matmuls, then the top eigenvectors), which runs on the CPU or on the GPU where
the features are. Features are numpy arrays (the faiss path) or torch tensors on the clustering device;
what a function gets it gives back. The fitted whitening is always a pair of numpy arrays
{"A": (pca_dim, d), "b": (pca_dim,)}: y = x @ A.T + b, stored in the checkpoint.
"""
import time

import faiss
import numpy as np
import torch

from .common import finite, is_tensor, one_process, rows_per_chunk, to_numpy, to_tensor

AUTO_PCA_DIM = 16  # pca_dim 0 on a large set: chosen on a validation split of Fashion-MNIST (docs/results.md)
IMAGES_PER_WHITENED_DIM = 8  # pca_dim 0 on a small set: one dimension per this many images ... (tools/whitening_dims.py)
AUTO_PCA_DIM_MIN = 2  # ... and at least this many


def faiss_pca(x, dim):
    """Exact PCA with faiss PCAMatrix, as the reference: (components (dim, d), eigenvalues (dim,), mean (d,))."""
    x = to_numpy(x, np.float32)
    n, d = x.shape
    pca = faiss.PCAMatrix(d, dim, -0.5)  # faiss >= 1.8: positional arguments only
    pca.train(np.ascontiguousarray(x))
    components = faiss.vector_to_array(pca.PCAMat).reshape(-1, d)[:dim]
    eigenvalues = faiss.vector_to_array(pca.eigenvalues)[:dim] / n
    return components, eigenvalues, faiss.vector_to_array(pca.mean)


def top_eigh(m, dim, niter=16, seed=0):
    """Top-dim eigenpairs (descending) of a symmetric PSD matrix m (a tensor on any device).

    Up to 2048 x 2048: exact LAPACK / cuSOLVER eigh in float64 (float32 loses the small eigenvectors).
    Larger (the 4096 x 4096 covariance of fc7): randomised subspace iteration (Halko et al. 2011)
    with q = 2 dim float32 directions and a float64 Rayleigh-Ritz step, which is several times
    faster than the float64 eigh and agrees with faiss' whitening as closely as an exact eigh
    does (docs/performance.md). The random start is drawn on the CPU, so a seed gives the same
    start on every device.
    """
    size = m.shape[0]
    if size <= 2048:
        values, vectors = torch.linalg.eigh(m.double())
    else:
        gen = torch.Generator().manual_seed(int(seed))
        start = torch.randn(size, min(size, 2 * dim), generator=gen).to(m.device)
        basis = torch.linalg.qr(m @ start).Q
        for _ in range(niter):
            basis = torch.linalg.qr(m @ basis).Q
        basis = basis.double()
        values, small = torch.linalg.eigh(basis.T @ m.double() @ basis)
        vectors = basis @ small
    order = torch.argsort(values, descending=True)[:dim]
    return values[order].clamp(min=0), vectors[:, order]


def torch_pca(x, dim, seed=0, chunk=8192, shards=None):
    """PCA for any n, on the device of x (a tensor of any float dtype; a numpy array runs on the CPU): the d x d
    covariance (n >= d) or the n x n Gram matrix (n < d), built with float32 matmuls in row chunks (no centred
    or float32 copy of a large X; non-finite values count as 0), then top_eigh. With shards (see
    common.OneProcess) x is this process' rows: the column sums and the covariance are all-reduced (d + d x d
    numbers), or, for n < d, the n rows are gathered. Returns numpy (components (dim, d), eigenvalues (dim,),
    mean (d,))."""
    X = x if is_tensor(x) else torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    shards = one_process(shards, len(X))
    n, d = shards.n, X.shape[1]
    if n < d:
        return gram_pca(shards.cat(finite(X)), dim, seed, chunk)
    blocks = [(i, min(i + chunk, len(X))) for i in range(0, len(X), chunk)]
    sums = [finite(X[i:j]).double().sum(0) for i, j in blocks] or [torch.zeros(d, dtype=torch.float64,
                                                                               device=X.device)]
    mu = shards.sum(torch.stack(sums).sum(0)).div(n).float()
    cov = torch.zeros(d, d, device=X.device)
    for i, j in blocks:
        block = finite(X[i:j]) - mu
        cov.addmm_(block.T, block)
    values, vectors = top_eigh(shards.sum(cov), dim, seed=seed)
    return to_numpy(vectors.T.float()), to_numpy(values / n), to_numpy(mu)


def gram_pca(X, dim, seed=0, chunk=8192):
    """torch_pca of fewer rows than dimensions (X: (n, d) float32, n < d), from the n x n Gram matrix."""
    n = len(X)
    mu = torch.stack([X[i:i + chunk].double().sum(0) for i in range(0, n, chunk)]).sum(0).div(n).float()
    centred = X - mu
    values, vectors = top_eigh(centred @ centred.T, dim, seed=seed)
    components = (vectors.T.float() @ centred)  # rows have norm sqrt(eigenvalue)
    components = components / components.norm(dim=1, keepdim=True).clamp(min=1e-30)
    return to_numpy(components), to_numpy(values / n), to_numpy(mu)


def fit_pca_whitening(x, pca_dim, method="torch", seed=0, log=None, shards=None):
    """PCA-whitening: centre, keep the top pca_dim principal directions, scale each by 1/sqrt(eigenvalue).

    method "faiss" is the reference's PCAMatrix(d, pca_dim, -0.5); "torch" gives the same
    whitening (see torch_pca and top_eigh) many times faster at d = 4096, on x's device. With shards over
    several processes (x: this process' rows) the PCA is torch's from all-reduced statistics, whatever the
    method (faiss' PCAMatrix needs every row in one process), and every process gets rank 0's whitening.
    Returns {"A": (pca_dim, d), "b": (pca_dim,)} numpy float32 so that y = x @ A.T + b. Directions whose
    eigenvalue is numerically zero (below 1e-6 of the largest: rank-deficient features, e.g.
    dead units or a collapsed network) would be whitened to NaN or to amplified noise; their
    rows are set to zero instead, so they carry nothing into k-means.
    """
    shards = one_process(shards, len(x))
    if method == "faiss" and shards.world == 1:
        components, eigenvalues, mean = faiss_pca(x, pca_dim)
    else:
        components, eigenvalues, mean = torch_pca(x, pca_dim, seed=seed, shards=shards)
    eigenvalues = np.asarray(eigenvalues, dtype=np.float64)
    dead = ~(eigenvalues > eigenvalues.max(initial=0.0) * 1e-6)  # also catches NaN
    scale = np.where(dead, 0.0, 1.0 / np.sqrt(np.where(dead, 1.0, eigenvalues)))
    A = (components.astype(np.float64) * scale[:, None]).astype(np.float32)
    b = (-A.astype(np.float64) @ mean.astype(np.float64)).astype(np.float32)
    if dead.any() and log is not None:
        log(f"pca: {int(dead.sum())} of {pca_dim} directions have (near) zero variance and are dropped")
    return {"A": shards.same(A), "b": shards.same(b)}


def l2_normalize(y):
    """Row-wise L2 normalisation; all-zero rows stay zero instead of becoming NaN."""
    if is_tensor(y):
        return y / y.norm(dim=1, keepdim=True).clamp(min=1e-12)
    norms = np.linalg.norm(y, axis=1, keepdims=True)
    return (y / np.maximum(norms, 1e-12)).astype(np.float32)


def projector(pca, like):
    """apply_pca as a function of the rows, with the whitening moved once to the device of `like`."""
    if not is_tensor(like):
        return lambda rows: apply_pca(rows, pca)
    A, b = to_tensor(pca["A"], like.device), to_tensor(pca["b"], like.device)
    return lambda rows: l2_normalize(torch.addmm(b, rows.float(), A.T))


def whiten_rows(x, pca):
    """apply_pca of every row of x; a tensor (of any float dtype) in row chunks, each made finite and float32 on
    its own, so that no float32 copy of x is held. Returns (n, pca_dim) float32 of x's kind and device."""
    if not is_tensor(x):
        return apply_pca(x, pca)
    to_rows = projector(pca, x)
    out = torch.empty(len(x), len(pca["b"]), dtype=torch.float32, device=x.device)
    step = rows_per_chunk(x.shape[1], x.device)
    for i in range(0, len(x), step):
        out[i:i + step] = to_rows(finite(x[i:i + step]))
    return out


def apply_pca(x, pca):
    """Project with a fitted whitening, then L2-normalise each row (numpy in, numpy out; a tensor stays on its device)."""
    if is_tensor(x):
        return projector(pca, x)(x)
    y = np.asarray(x, dtype=np.float32) @ pca["A"].T + pca["b"]
    return l2_normalize(y)


def auto_pca_dim(n):
    """The whitening dimension of pca_dim 0 for n images: AUTO_PCA_DIM, and on a small set one dimension per
    IMAGES_PER_WHITENED_DIM images (at least AUTO_PCA_DIM_MIN), always below n - 1.

    Whitening n centred points to n - 1 dimensions makes them the vertices of a regular simplex (every pair
    equally far apart), and well before that the whitened distances are mostly noise: on class-balanced sets of
    8-200 real images (Fashion-MNIST; random and trained fc7 features and raw pixels) k-means found the classes
    best with a few whitened dimensions per set and fell to chance towards n - 1 (tools/whitening_dims.py,
    docs/algorithm.md)."""
    return max(1, min(AUTO_PCA_DIM, n - 2, informative_dims(n)))


def informative_dims(n):
    """The whitened dimensions a set of n images keeps informative in our measurements (auto_pca_dim): one per
    IMAGES_PER_WHITENED_DIM images, at least AUTO_PCA_DIM_MIN."""
    return max(AUTO_PCA_DIM_MIN, n // IMAGES_PER_WHITENED_DIM)


def clamp_pca_dim(pca_dim, n, d):
    """The whitening dimension for n samples of dimension d: auto_pca_dim(n) for pca_dim 0, else pca_dim kept
    below n - 1 (the regular simplex, see auto_pca_dim); never above d, never below 1."""
    dim = auto_pca_dim(n) if pca_dim == 0 else min(pca_dim, n - 2)
    return max(1, min(dim, d))


def fit_sample_note(pca_dim, fit, n, d):
    """'' when a PCA fitted on `fit` of n samples keeps as many whitened dimensions as one fitted on all of them,
    else the words that say how many it keeps and the smallest fit sample that keeps them all."""
    dim, full = clamp_pca_dim(pca_dim, fit, d), clamp_pca_dim(pca_dim, n, d)
    if dim >= full:
        return ""
    enough = next(m for m in range(fit, n + 1) if clamp_pca_dim(pca_dim, m, d) >= full)
    return (f" (it whitens to {dim} dimension{'s' * (dim != 1)} where all {n} would keep {full}; "
            f"pca_fit_samples {enough} or more keeps them)")


def clamp_note(pca_dim, n, d):
    """The log line about the whitening dimension of n samples of dimension d (train.py and pred.py say it once),
    or None when there is nothing to say: the automatic dimension of a small set, an explicit pca_dim clamped,
    or an explicit pca_dim kept although a small set keeps fewer dimensions informative."""
    dim = clamp_pca_dim(pca_dim, n, d)
    if pca_dim == 0:
        return None if dim == AUTO_PCA_DIM else (
            f"pca_dim 0 (automatic): {dim} whitened dimensions for {n} images (one per {IMAGES_PER_WHITENED_DIM} "
            f"images, {max(1, min(AUTO_PCA_DIM_MIN, n - 2))} to {AUTO_PCA_DIM}, below the number of images - 1)")
    if dim < pca_dim:
        return (f"pca_dim {pca_dim} clamped to {dim}: {n} images of dimension {d} (whitened to n - 1 dimensions, "
                f"every pair of images is equally far apart)")
    small_set_dim = informative_dims(n)
    if pca_dim > small_set_dim:
        return (f"pca_dim {pca_dim} kept as set; on {n} images whitened distances beyond about {small_set_dim} "
                f"dimensions were mostly noise in our measurements (pca_dim 0 chooses {auto_pca_dim(n)})")
    return None


def distinct_rows(x):
    """The number of distinct rows of x (n, d), numpy or tensor, compared at float16 precision (the same image
    decoded twice gives features equal to rounding)."""
    rows = to_numpy(x).astype(np.float16)
    return len(np.unique(rows.view(np.dtype((np.void, rows.dtype.itemsize * rows.shape[1]))).ravel()))


def copies_pca_dim(n, m, k, d):
    """pca_dim 0 on a small set whose n rows hold only m distinct ones (copies), for k clusters: None when the
    automatic dimension stands (no copies, a large set, or no k), else the dimension to use.

    The automatic rule counts images; copies add images without adding directions. When every distinct row can
    have its own cluster (m <= k) the whitening keeps all m - 1 directions the distinct rows span (20 copies of
    one image and 3 other images, k = 6: 2 dimensions put two of the 3 together at every seed tried, 3 kept
    them apart); otherwise the rule counts the distinct rows (never their simplex, m - 1)."""
    auto = auto_pca_dim(n)
    if k is None or m >= n or auto >= AUTO_PCA_DIM:
        return None
    dim = min(m - 1, AUTO_PCA_DIM) if m <= k else min(auto, auto_pca_dim(m))
    dim = max(1, min(dim, d))
    return None if dim == auto else dim


def preprocess_features(x, pca_dim=256, log=None, method="torch", seed=0, shards=None, k=None, note=None):
    """PCA-whitening to pca_dim (clamped, clamp_pca_dim), then L2 normalisation. x: (n, d) numpy array or tensor
    (float32, or float16 / bfloat16 held features: no float32 copy of them is made); with shards, this process'
    rows of the whole matrix (see torch_pca). Non-finite values count as 0. k: the clusters the rows are cut into
    next; with pca_dim 0 on a small set it lets the dimension count distinct rows (copies_pca_dim), said in one line
    to note (default: log).
    Returns (whitened rows (n, dim) float32 of x's kind and device, pca). Raises ValueError below 2 rows."""
    if not is_tensor(x):
        x = np.asarray(x, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError(f"features must be a 2-d array, got shape {tuple(x.shape)}")
    shards = one_process(shards, len(x))
    if shards.n < 2:
        raise ValueError(f"PCA needs at least 2 feature rows, got {shards.n}")
    if not is_tensor(x):
        x = finite(x)  # the faiss path holds one float32 array, as the reference
    dim = clamp_pca_dim(pca_dim, shards.n, x.shape[1])
    if pca_dim == 0 and k is not None and shards.world == 1 and auto_pca_dim(shards.n) < AUTO_PCA_DIM:
        m = distinct_rows(x)
        copies = copies_pca_dim(shards.n, m, k, x.shape[1])
        if copies is not None:
            note = note or log
            if note is not None:
                note(f"pca_dim 0 (automatic): {shards.n} images hold {m} distinct feature rows (copies); whitened to "
                    f"{copies} dimensions instead of {dim}" + (", so that each distinct image can have its own of "
                                                               f"the {k} clusters" if m <= k else ""))
            dim = copies
    pca = fit_pca_whitening(x, dim, method, seed, log, shards)
    return whiten_rows(x, pca), pca


def _empty_rows(n, d, like):
    if is_tensor(like):
        return torch.empty(n, d, dtype=torch.float32, device=like.device)
    return np.empty((n, d), dtype=np.float32)


def _put(out, idx, rows):
    if is_tensor(out):
        out[torch.as_tensor(idx, device=out.device)] = rows
    else:
        out[idx] = rows


def streamed_whitening(batches, n, pca_dim, fit_samples, log=None, method="torch", seed=0, shards=None):
    """PCA-whitening + L2 normalisation of features that arrive in batches of (indices, rows).

    The first `fit_samples` rows are collected and the PCA is fitted on them; from then on every
    row is projected to pca_dim as it arrives, so memory holds fit_samples x d plus n x pca_dim,
    never n x d. With fit_samples >= n this is the whitening of preprocess_features. Rows are numpy
    arrays or tensors (all on one device).
    With shards (a distributed.Shards), n and fit_samples are this process' rows and its part of the sample:
    the PCA is fitted on the sample of every process (torch_pca's all-reduced statistics) once each has
    collected its part; a process without rows must still yield one empty batch (0 x d).
    Returns (n x pca_dim float32 rows in index order, of the batches' kind and device, pca).
    """
    cap = min(fit_samples, n)
    pca = out = buf = buf_idx = project = None
    filled = 0

    def fit(x, idx):
        sample = one_process(shards, len(x)).part(len(x))
        if sample.n < 2:
            raise ValueError(f"PCA needs at least 2 feature rows, got {sample.n}")
        dim = clamp_pca_dim(pca_dim, sample.n, x.shape[1])
        fitted = fit_pca_whitening(x, dim, method=method, seed=seed, log=log, shards=sample)
        result = _empty_rows(n, dim, x)
        to_rows = projector(fitted, x)
        _put(result, idx, to_rows(x))
        return fitted, result, to_rows

    for idx, feats in batches:
        idx, feats = np.asarray(idx), finite(feats)
        if pca is None:
            if filled == 0 and len(idx) >= cap:  # one batch holds the whole fit sample: no copy
                used = cap
                pca, out, project = fit(feats[:cap], idx[:cap])
            else:
                if buf is None:
                    buf, buf_idx = _empty_rows(cap, feats.shape[1], feats), np.empty(cap, dtype=np.int64)
                used = min(cap - filled, len(idx))
                buf[filled:filled + used], buf_idx[filled:filled + used] = feats[:used], idx[:used]
                filled += used
                if filled == cap:
                    pca, out, project = fit(buf, buf_idx)
                    buf = None
            idx, feats = idx[used:], feats[used:]
        if len(idx):
            _put(out, idx, project(feats))
    if pca is None:
        if buf is None:
            raise ValueError("no features to whiten")
        pca, out, project = fit(buf[:filled], buf_idx[:filled])
    return out, pca


class WhitenThenCluster:
    """cluster(features) = preprocess_features, then the subclass's cluster_whitened. Features on the
    clustering device (a tensor) keep the whole step there."""

    others = ()  # the further clusterings of an epoch on the same whitened rows (Kmeans with a list of k)
    say = None  # where a note that holds for the whole run goes, once, even without verbose (train.py: its log)
    said = ()

    def clusterings(self):
        """This clustering and the others of the epoch, the first first."""
        return [self, *self.others]

    def pseudo_labels(self):
        """Each image's pseudo-labels: the assignment (n,), or with further clusterings the (n, H) int64 array of
        every clustering's assignment, the first's in column 0."""
        every = self.clusterings()
        return self.assignment if len(every) == 1 else np.stack([cl.assignment for cl in every], axis=1)

    def cluster(self, features, seed=0, log=None):
        return self.cluster_whitened(*self.whiten(features, seed, log), seed, log)

    def note_once(self, line):
        if line not in self.said:
            self.said = (*self.said, line)
            self.say(line)

    def whiten(self, features, seed=0, log=None, shards=None):
        """preprocess_features with the clusterer's settings (with shards: this process' rows, see torch_pca),
        timed in the log: (whitened rows, pca)."""
        t0 = time.time()
        xb, pca = preprocess_features(features, self.pca_dim, log=log, method=self.pca_method, seed=seed,
                                      k=max(cl.k for cl in self.clusterings()) or None, shards=shards,
                                      note=self.note_once if self.say else None)
        if log is not None:
            log(f"PCA-whitening: {time.time() - t0:.1f} s")
        return xb, pca
