import pytest

from ticketlab import Mask, build_model, prune, prune_magnitude
from ticketlab.errors import TicketlabError
from ticketlab.pruning import magnitude_scores, rates_for_density

PAPER = {"fc": 0.2, "output": 0.1}


@pytest.fixture(scope="module")
def lenet():
    return build_model("lenet_300_100", (1, 28, 28), 10, seed=0)


def paper_density(n: int) -> float:  # ../shared/reference: P(n) for LeNet-300-100
    return (265_200 * 0.8**n + 1_000 * 0.9**n) / 266_200


@pytest.mark.parametrize("n", [1, 3, 7, 12])
def test_one_shot_to_level_n_density_prunes_each_layer_as_n_rounds(lenet, n):
    dense = Mask.dense(lenet)
    rates = rates_for_density(dense, PAPER, paper_density(n))
    one_shot = prune(dense, magnitude_scores(lenet, dense), rates)
    iterative = dense
    for _ in range(n):
        iterative = prune_magnitude(lenet, iterative, PAPER)
    for name, (kept, _) in iterative.counts().items():
        assert abs(one_shot.counts()[name][0] - kept) <= 1  # rounding of n rounds vs one
    assert one_shot.density() == pytest.approx(paper_density(n), abs=2e-5)


@pytest.mark.parametrize("density", [0.5, 0.2, 0.1, 0.05, 0.01])
def test_one_shot_densities_layerwise_and_global(lenet, density):
    dense = Mask.dense(lenet)
    scores = magnitude_scores(lenet, dense)
    layerwise = prune(dense, scores, rates_for_density(dense, PAPER, density))
    assert layerwise.density() == pytest.approx(density, abs=1e-5)
    by_group = layerwise.density_by_group()
    assert by_group["output"] > by_group["fc"]  # the output layer keeps its slower rate
    uniform = prune(dense, scores, rates_for_density(dense, 0.2, density))
    for d in uniform.density_by_tensor().values():
        assert d == pytest.approx(density, abs=1e-3)  # one rate: every layer alike
    glob = prune(dense, scores, rates_for_density(dense, 0.2, density, scope="global"),
                 scope="global")
    assert glob.density() == pytest.approx(density, abs=1e-5)


def test_one_shot_from_a_pruned_mask_and_excluded_groups(lenet):
    half = prune_magnitude(lenet, Mask.dense(lenet), 0.5)
    rates = rates_for_density(half, PAPER, 0.1, exclude=("output",))
    mask = prune(half, magnitude_scores(lenet, half), rates, exclude=("output",))
    assert mask.density() == pytest.approx(0.1, abs=1e-5)
    assert mask.counts()["fc3.weight"] == half.counts()["fc3.weight"]
    with pytest.raises(TicketlabError, match="cannot add weights back"):
        rates_for_density(half, PAPER, 0.6)
    with pytest.raises(TicketlabError, match="unpruned groups"):
        rates_for_density(Mask.dense(lenet), {"output": 0.1}, 0.5)
    with pytest.raises(TicketlabError, match=r"\(0, 1\]"):
        rates_for_density(half, PAPER, 0.0)
