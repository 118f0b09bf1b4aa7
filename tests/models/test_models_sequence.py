"""SequenceModel: shapes, padding never leaks into real steps, reversal helpers."""

from __future__ import annotations

import pytest
import torch

from ich.data.sequences import reverse_spacing
from ich.errors import ConfigError
from ich.models.sequence import SequenceModel, lengths_from_mask, read_both_ways, reverse_padded

KINDS = ["gru", "lstm", "transformer"]


def _batch(b: int = 3, t: int = 7, d: int = 16) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(0)
    feats = torch.randn(b, t, d, generator=g)
    z = torch.full((b, t), 5.0)
    lengths = torch.tensor([t, 4, 1][:b])
    mask = torch.arange(t).unsqueeze(0) < lengths.unsqueeze(1)
    return feats, z, mask


@pytest.mark.parametrize("kind", KINDS)
def test_shapes(kind: str) -> None:
    feats, z, mask = _batch()
    model = SequenceModel(16, kind=kind, hidden=32, layers=2).eval()  # type: ignore[arg-type]
    slice_logits, study_logits = model(feats, z, mask)
    assert slice_logits.shape == (3, 7, 6)
    assert study_logits.shape == (3, 6)
    assert torch.all(slice_logits[~mask] == 0)
    assert torch.isfinite(study_logits).all()


@pytest.mark.parametrize("kind", KINDS)
def test_padding_does_not_change_real_steps(kind: str) -> None:
    torch.manual_seed(0)
    feats, z, mask = _batch()
    model = SequenceModel(16, kind=kind, hidden=32, layers=2).eval()  # type: ignore[arg-type]
    with torch.no_grad():
        a_slice, a_study = model(feats, z, mask)
        garbage = feats.clone()
        garbage[~mask] = 1e3 * torch.randn(int((~mask).sum()), 16)
        z2 = z.clone()
        z2[~mask] = 77.0
        b_slice, b_study = model(garbage, z2, mask)
        # The same series alone, without any padding, gives the same answer.
        alone_slice, alone_study = model(feats[1:2, :4], z[1:2, :4], mask[1:2, :4])
    assert torch.allclose(a_slice[mask], b_slice[mask], atol=1e-5)
    assert torch.allclose(a_study, b_study, atol=1e-5)
    assert torch.allclose(alone_slice[0], a_slice[1, :4], atol=1e-5)
    assert torch.allclose(alone_study[0], a_study[1], atol=1e-5)


def test_z_spacing_is_an_input() -> None:
    torch.manual_seed(0)
    feats, z, mask = _batch()
    model = SequenceModel(16, hidden=32).eval()
    with torch.no_grad():
        a, _ = model(feats, z, mask)
        b, _ = model(feats, z * 0.2, mask)
    assert not torch.allclose(a[mask], b[mask])


def test_reverse_padded_keeps_padding_and_is_an_involution() -> None:
    x = torch.arange(12.0).view(2, 6)
    mask = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0]]).bool()
    r = reverse_padded(x, mask)
    assert r.tolist() == [[5, 4, 3, 2, 1, 0], [8, 7, 6, 9, 10, 11]]
    assert torch.equal(reverse_padded(r, mask), x)


def test_reversed_series_gives_reversed_slices_with_flip_tta() -> None:
    # Reversal TTA: run on the reversed series, reverse the outputs back -> aligned with input.
    torch.manual_seed(0)
    feats, z, mask = _batch()
    model = SequenceModel(16, hidden=32).eval()
    with torch.no_grad():
        fwd, _ = model(feats, z, mask)
        rev, _ = model(reverse_padded(feats, mask), reverse_padded(z, mask), mask)
    back = reverse_padded(rev, mask)
    assert back.shape == fwd.shape
    assert torch.all(back[~mask] == 0)
    # a 1-slice series is its own reverse
    assert torch.allclose(back[2, 0], fwd[2, 0], atol=1e-5)


@pytest.mark.parametrize("kind", KINDS)
def test_read_both_ways_is_the_mean_of_each_series_and_its_reverse(kind: str) -> None:
    # Padded batch in, the same as each series alone read forwards and reversed (with its
    # spacing reversed as training does), so padding and the spacing shift are right.
    torch.manual_seed(0)
    feats, _, mask = _batch()
    z = torch.rand(mask.shape) * 4 + 1  # uneven spacing: a wrong shift would show
    model = SequenceModel(16, kind=kind, hidden=32, layers=2).eval()  # type: ignore[arg-type]
    with torch.no_grad():
        both_slices, both_study = read_both_ways(model, feats, z, mask)
        for b, n in enumerate(lengths_from_mask(mask).tolist()):
            f, zz = feats[b : b + 1, :n], z[b : b + 1, :n]
            one = torch.ones(1, n, dtype=torch.bool)
            fs, fst = model(f, zz, one)
            rz = torch.from_numpy(reverse_spacing(zz[0].numpy()).copy())[None]
            rs, rst = model(f.flip(1), rz, one)
            torch.testing.assert_close(both_slices[b, :n], ((fs + rs.flip(1)) / 2)[0],
                                       atol=1e-5, rtol=1e-4)
            torch.testing.assert_close(both_study[b], ((fst + rst) / 2)[0], atol=1e-5, rtol=1e-4)
            if n > 1:  # the reversed reading is a second view, not the same numbers
                assert not torch.allclose(fs, rs.flip(1), atol=1e-4)
    assert torch.all(both_slices[~mask] == 0)


def test_bad_arguments() -> None:
    with pytest.raises(ConfigError):
        SequenceModel(8, kind="cnn")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="prefix"):
        lengths_from_mask(torch.tensor([[True, False, True]]))


def test_model_args_rebuild() -> None:
    m = SequenceModel(10, kind="lstm", hidden=16, layers=1, dropout=0.0)
    assert SequenceModel(**m.model_args()).model_args() == m.model_args()  # type: ignore[arg-type]
