"""``--recipe``: the fine-tuning choices that measured best for a backbone, applied under the flags a user gives.

One table keyed by architecture name, not a field of the registry row: a row holds published facts about a
network (its file, hash, cuts, top-1), while a recipe is our measurement of how to train it, in option
keywords, which the models layer below the options does not speak; and the table is the one place the lead
edits after measuring. ``tests/test_recipes.py`` checks that every key is a registry row and every setting a
retrain option.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Collection, Mapping

from ..errors import UserError, option_name, option_value
from ..options import default
from ..options.training import DISTORTIONS

NO_RECIPE = default("recipe")  # Poets' head, the flags as given
BEST = "best"
RECIPE_NAMES = (NO_RECIPE, BEST)


@dataclass(frozen=True)
class Recipe:
    """What ``--recipe best`` sets for one backbone, as option keywords -> values.

    Attributes:
        fine_tuning: the blocks, views, passes, learning rate, schedule, warm-up and weight decay.
        views: the options that draw the cached views. Today these are Poets' distortion flags; the view flags
            being added (``random_resized_crop``, ``color_jitter``) belong here once they exist. A user who gives
            any view option draws their own views: the recipe's are then left out as a set, never mixed in.
        source: where the numbers come from.
    """
    fine_tuning: Mapping[str, Any]
    views: Mapping[str, Any] = field(default_factory=dict)
    source: str = ""


BEST_RECIPES: dict[str, Recipe] = {
    "mobilenet_1.0_224": Recipe(
        # Issue 20's independent recipe, 93.2% held-out on 2,934 flower photos (and still rising): the top 4
        # blocks above the 14x14x512 cut (Conv2d_9_pointwise: blocks 10-13, --fine_tune_blocks 4), the original
        # plus 4 crop/flip views, Adam 1e-4 with cosine decay over 4 passes, L2 1e-5 on the blocks. To be
        # re-measured on Caltech-101 (benchmarks/accuracy.py).
        fine_tuning=dict(fine_tune_blocks=4, augment_copies=4, fine_tune_epochs=4.0, fine_tune_learning_rate=1e-4,
                         fine_tune_schedule="cosine", fine_tune_warmup=0.0, weight_decay=1e-5),
        views=dict(flip_left_right=True, random_crop=10.0, random_scale=10.0),  # the crop/flip views
        source="issue 20's independent recipe"),
}

# The options that draw views: giving any of them replaces a recipe's views.
VIEW_OPTIONS = tuple(option.name for option in DISTORTIONS)


@dataclass(frozen=True)
class AppliedRecipe:
    """The option values with a recipe applied, and what it set, for the run's one line."""
    values: dict[str, Any]
    recipe: str
    architecture: str
    set: dict[str, Any]  # option -> value the recipe chose
    kept: tuple[str, ...] = ()  # the recipe's fine-tuning options the user gave, which won
    own_views: bool = False  # the user gave view options: the recipe's views were left out

    @property
    def line(self) -> str:
        """``Recipe best for mobilenet_1.0_224 (source): set --fine_tune_blocks 4, ...; kept your --x``, or ""."""
        if self.recipe == NO_RECIPE:
            return ""
        chosen = ", ".join(option_value(name, _spelled(value)) for name, value in self.set.items()) or "nothing"
        given = f"; kept your {', '.join(option_name(name) for name in self.kept)}" if self.kept else ""
        views = "; your view flags replace its views" if self.own_views else ""
        source = BEST_RECIPES[self.architecture].source
        return f"Recipe {self.recipe} for {self.architecture} ({source}): set {chosen}{given}{views}"


def _spelled(value: Any) -> str:
    return repr(value) if isinstance(value, str) else f"{value:g}" if isinstance(value, float) else str(value)


def apply_recipe(values: Mapping[str, Any], given: Collection[str], architecture: str) -> AppliedRecipe:
    """``values`` with the recipe they name filled in wherever the user did not give the option.

    Args:
        values: every retrain option with its value (``checked_values``), ``recipe`` among them.
        given: the options the user gave (flags typed, keywords passed); these win over the recipe.
        architecture: the backbone's registry name, whose recipe applies.

    Returns:
        The values to build the run from, and what the recipe set.

    Raises:
        UserError: an unknown recipe name, or a backbone without a recipe (naming those that have one).
    """
    recipe = values["recipe"]
    if recipe not in RECIPE_NAMES:
        raise UserError(f"{option_value('recipe', repr(recipe))} is unknown; use one of {', '.join(RECIPE_NAMES)}")
    if recipe == NO_RECIPE:
        return AppliedRecipe(dict(values), recipe, architecture, {})
    if architecture not in BEST_RECIPES:
        raise UserError(f"{option_value('recipe', recipe)} has no recipe for {architecture}; the architectures with "
                        f"one: {', '.join(BEST_RECIPES)}")
    row = BEST_RECIPES[architecture]
    own_views = any(name in given for name in VIEW_OPTIONS)
    offered = {**row.fine_tuning, **({} if own_views else row.views)}
    chosen = {name: value for name, value in offered.items() if name not in given}
    kept = tuple(name for name in row.fine_tuning if name in given)
    return AppliedRecipe({**values, **chosen}, recipe, architecture, chosen, kept, own_views)


def check_recipe(recipe: str, validation_percentage: float) -> None:
    """Refuse a recipe without validation images: it keeps fine-tuning only where they prove it pays.

    Fine-tuning blind would export whatever stage two made, which on small data sets is often worse than the
    head alone; skipping it silently would spend the caching for nothing. One line says what to add instead.
    """
    if recipe != NO_RECIPE and validation_percentage <= 0:
        raise UserError(f"{option_value('recipe', recipe)} keeps fine-tuning only if the validation images prove it "
                        f"pays; give {option_name('validation_percentage')} above 0 (e.g. 10), or drop "
                        f"{option_name('recipe')}")
