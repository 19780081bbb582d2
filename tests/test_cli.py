"""The command line's surface: methods, help texts, one-line warnings."""

from __future__ import annotations

import warnings

import pytest

from sparsecell import cli
from sparsecell.catalogue import CHOICES, DEFAULT_LOSS, RESEARCH, ROLES


def test_the_catalogue_covers_every_loss_once():
    from sparsecell.losses.methods import LOSS_CLASSES

    assert set(CHOICES) | set(RESEARCH) == set(ROLES) == set(LOSS_CLASSES)
    assert not set(CHOICES) & set(RESEARCH)
    assert DEFAULT_LOSS in CHOICES and list(CHOICES)[0] == DEFAULT_LOSS


def test_train_help_offers_the_four_methods_and_lists_research_apart(capsys):
    with pytest.raises(SystemExit):
        cli.main(["train", "--help"])
    out = capsys.readouterr().out
    rows = [ln.split()[0] for ln in out.splitlines() if ln.startswith("  ") and ln.split() and ln.split()[0] in ROLES]
    assert rows == list(CHOICES)  # one row each, the default first
    assert "research variants" in out and all(n in out for n in RESEARCH)


def test_demo_help_names_its_methods(capsys):
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    out = capsys.readouterr().out
    assert "CE vs const" not in out and all(m in out for m in ("pu_sar", "ce", "sel_sfl", "pu"))


def test_an_unknown_method_is_one_line_naming_the_choices(capsys):
    assert cli.main(["train", "--method", "sel_sfll"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "unknown method 'sel_sfll'" in err and "pu_sar, pu, ce, sel_sfl" in err


def test_our_warnings_print_as_one_line_and_foreign_ones_not_at_all(capsys):
    import sparsecell.formats.points as ours

    previous = cli._one_line_warnings("predict")
    try:
        warnings.warn_explicit("a.csv: 3 of 9 points repeat\n another", UserWarning, ours.__file__, 10)
        warnings.warn_explicit("a library tip", UserWarning, "/usr/lib/python3/somelib.py", 5)
    finally:
        warnings.showwarning = previous
    err = capsys.readouterr().err
    assert err == "sparsecell predict: warning: a.csv: 3 of 9 points repeat another\n"
