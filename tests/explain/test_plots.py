"""The figures say what they show: every line of a legend visible where lines coincide, titles and names
whole (wrapped, or shortened at a word boundary), group shares per partition with the pairs they cover."""
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from explain import plots
from explain.report import _evolution_figure, _pair_labels


def _visible_pixels(fig) -> dict:
    """Pixels each line of ``fig`` shows in one drawing: every line painted a colour of its own that
    nothing else uses, nothing antialiased, then the pixels of each colour counted."""
    lines = [ln for ax in fig.axes for ln in ax.lines]
    codes = [(7, 3 + 6 * k, 250 - 3 * k) for k in range(len(lines))]
    for line, code in zip(lines, codes):
        c = "#%02x%02x%02x" % code
        line.set_antialiased(False)
        line.set_color(c)
        line.set_markeredgecolor(c)
    fig.canvas.draw()
    rgb = np.asarray(fig.canvas.buffer_rgba())[..., :3]
    key = (rgb[..., 0].astype(np.int64) << 16) | (rgb[..., 1].astype(np.int64) << 8) | rgb[..., 2]
    counts = dict(zip(*np.unique(key, return_counts=True)))
    return {line: int(counts.get((a << 16) | (b << 8) | c, 0)) for line, (a, b, c) in zip(lines, codes)}


def _summary(methods=("deeplift", "ig", "shapley")) -> pd.DataFrame:
    """deeplift and ig identical (as they are on these networks), shapley apart on shares only at epoch -1."""
    rows = []
    for m in methods:
        for e in range(-1, 4):
            u = 0.5 if e < 0 and m == "shapley" else 0.2 + 0.05 * e
            g = 0.05 + 0.1 * max(e, 0)
            rows.append({"epoch": e, "method": m, "stability": np.nan if e < 0 else 0.9 + 0.01 * e,
                         **{f"agreement_{o}": 1.0 for o in methods if o != m},
                         "share_user": u, "share_item": 1 - u, "share_gmf": g, "share_mlp": 1 - g,
                         "deletion_gain": 0.1 * (e + 1), "insertion_gain": 0.1 * (e + 1), "infidelity": 0.2 * (e + 1)})
    return pd.DataFrame(rows)


@pytest.fixture
def captured(monkeypatch):
    figs = {}

    def keep(fig, path):
        figs[path.rsplit("/", 1)[-1]] = fig
        return path

    monkeypatch.setattr(plots, "save", keep)
    yield figs
    plots.plt.close("all")


def test_every_line_in_a_legend_stays_visible_where_lines_coincide(captured, tmp_path):
    plots.plot_evolution(_summary(), str(tmp_path), ["user", "gmf"])
    assert set(captured) == {"group_shares.png", "stability.png", "agreement.png", "faithfulness.png"}
    for name, fig in captured.items():
        for ax in fig.axes:
            legend = ax.get_legend()
            assert legend is not None and len(legend.get_texts()) == len(ax.lines), name
        for line, n in _visible_pixels(fig).items():
            assert n > 20, f"{name}: {line.get_label()} hidden under another line"


def test_agreement_draws_each_pair_of_methods_once(captured, tmp_path):
    plots.plot_evolution(_summary(), str(tmp_path))
    labels = [ln.get_label() for ln in captured["agreement.png"].axes[0].lines]
    assert sorted(labels) == ["deeplift vs ig", "deeplift vs shapley", "ig vs shapley"]


def _titles_fit(fig) -> None:
    """Each whole title fits over its own axes (a title wider than its panel runs into the next one)."""
    fig.canvas.draw()
    r = fig.canvas.get_renderer()
    for ax in fig.axes:
        if not ax.get_title():
            continue  # a colour bar
        title, box = ax.title.get_window_extent(r), ax.get_window_extent(r)
        assert title.x0 >= box.x0 - 25 and title.x1 <= box.x1 + 25, ax.get_title()
        assert fig.bbox.contains(title.x0, title.y0) and fig.bbox.contains(title.x1, title.y1)


def test_titles_wrap_whole_instead_of_running_off(captured, tmp_path):
    plots.plot_evolution(_summary(), str(tmp_path))
    fig = captured["faithfulness.png"]
    assert " ".join(fig.axes[0].get_title().split()) == "Deletion: random AUC - method AUC (higher = more faithful)"
    for f in captured.values():
        _titles_fit(f)
    long = "lime on mlp_item (NeuMF, epoch 12) " * 4
    fig = plots.heatmap_figure(np.random.default_rng(0).normal(size=(3, 8)), ["a", "b", "c"], long.strip())
    assert " ".join(fig.axes[0].get_title().split()) == long.strip()
    _titles_fit(fig)


def test_a_heatmap_labels_whole_dimensions_even_for_a_width_one_embedding():
    """A width-1 embedding (a bias, TransitionMF's next) is one column: its axis says 0, not -0.5 / 0.0 / 0.5."""
    for width in (1, 3, 64):
        fig = plots.heatmap_figure(np.ones((2, width)), ["a", "b"], "t")
        fig.canvas.draw()
        ticks = [t for t in fig.axes[0].get_xticks() if -0.5 <= t <= width - 0.5]
        assert ticks and all(float(t).is_integer() for t in ticks), (width, ticks)
        plt.close(fig)


def test_names_are_shortened_at_a_word_boundary_keeping_the_year():
    assert plots.shorten("When Harry Met Sally... (1989)", 44) == "When Harry Met Sally... (1989)"
    long = "Shanghai Triad (Yao a yao yao dao waipo qiao) (1995)"
    short = plots.shorten(long, 40)
    assert len(short) <= 40 and short.endswith("… (1995)")
    head = short.removesuffix("… (1995)")
    assert long.startswith(head) and long[len(head)] == " "  # cut between words
    meta = pd.DataFrame({"pair": [0, 1], "user_id": [196, 196], "item_id": [216, 6],
                         "item_name": ["When Harry Met Sally... (1989)", long]})
    labels = _pair_labels(meta, plots.shorten)
    assert labels[0] == "196 x 216 When Harry Met Sally... (1989)"
    assert labels[1].startswith("196 x 6 Shanghai Triad") and labels[1].endswith("… (1995)")


def _pairs(epoch=3):
    rng = np.random.default_rng(0)
    rows = []
    for m in ("deeplift", "lime"):
        for p in range(3):
            u, g = rng.uniform(0.1, 0.9, 2)
            rows.append({"method": m, "pair": p, "user_id": 196, "item_id": p + 1, "epoch": epoch,
                         "share_user": u, "share_item": 1 - u, "share_gmf": g, "share_mlp": 1 - g})
    return pd.DataFrame(rows)


def test_group_share_bars_are_one_panel_per_partition_and_say_which_pairs():
    pairs = _pairs()
    for fig in (plots.shares_figure(pairs), plots.shares_figure(pairs, "Shares", [["user", "item"], ["gmf", "mlp"]])):
        assert len(fig.axes) == 2
        ticks = [[t.get_text() for t in ax.get_xticklabels()] for ax in fig.axes]
        assert ticks == [["user", "item"], ["GMF", "MLP"]]
        assert "user vs item" in fig.axes[0].get_title() and "GMF vs MLP" in fig.axes[1].get_title()
        sup = " ".join(fig._suptitle.get_text().split())
        assert "3 pairs of user 196" in sup and "epoch 3" in sup
        # each panel's bars: per method, the partition's mean shares, which add up to 1
        for ax in fig.axes:
            heights = np.array([b.get_height() for b in ax.patches]).reshape(2, 2)  # [method, group]
            np.testing.assert_allclose(heights.sum(1), 1.0, atol=1e-9)
    plots.plt.close("all")


def test_evolution_figure_names_pairs_and_keeps_every_line_visible():
    rows = []
    for e in range(3):
        for m in ("deeplift", "lime"):
            for p in range(2):
                rows.append({"method": m, "pair": p, "epoch": e, "share_user": 0.3, "share_item": 0.7,
                             "share_gmf": 0.1 * e, "share_mlp": 1 - 0.1 * e})
    names = {0: "196 x 1 Toy Story (1995)", 1: "196 x 216 When Harry Met Sally... (1989)"}
    fig = _evolution_figure(pd.DataFrame(rows), [["user", "item"], ["gmf", "mlp"]], names)
    labels = {ln.get_label() for ln in fig.axes[0].lines}
    assert "lime: 196 x 216 When Harry Met Sally... (1989)" in labels and len(labels) == 4
    assert "GMF vs MLP" in fig.axes[1].get_title()
    for line, n in _visible_pixels(fig).items():
        assert n > 20, line.get_label()
    plots.plt.close("all")


def test_a_figure_is_written_whole_or_not_at_all(tmp_path):
    import matplotlib.pyplot as plt

    path = tmp_path / "shares.png"
    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    plots.save(fig, str(path))
    before = path.read_bytes()
    assert before.startswith(b"\x89PNG")  # the format comes from the name, not the temporary file's

    class Broken(RuntimeError):
        pass

    fig, ax = plt.subplots()
    ax.plot([0, 1], [0, 1])
    real = fig.savefig

    def half_then_fail(where, **kw):  # a write that dies part way (disk full, killed)
        real(where, **kw)
        with open(where, "r+b") as fh:
            fh.truncate(100)
        raise Broken("disk full")

    fig.savefig = half_then_fail
    with pytest.raises(Broken):
        plots.save(fig, str(path))
    assert path.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["shares.png"]
    assert not plt.fignum_exists(fig.number)  # closed all the same


def test_names_the_font_lacks_are_said_once_not_per_character(tmp_path, caplog, recwarn):
    import logging

    plots._MISSING_GLYPHS_SAID.clear()
    with caplog.at_level(logging.WARNING, logger="ncf"):
        for k in range(2):
            fig, ax = plt.subplots()
            ax.set_title("東京物語 (1953)")
            plots.save(fig, str(tmp_path / f"f{k}.png"))
    said = [m for m in caplog.messages if "lacks" in m]
    assert len(said) == 1 and "lacks 4 characters of the names (e.g. 京, 東, 物)" in said[0]
    assert not [w for w in recwarn if "missing from font" in str(w.message)]
    assert (tmp_path / "f1.png").stat().st_size > 1000
