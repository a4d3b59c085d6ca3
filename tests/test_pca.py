import numpy as np
import pytest

from aejax import pca


def _plane(theta):
    # The x-y plane rotated by theta about the x axis.
    return np.array([[1.0, 0.0], [0.0, np.cos(theta)], [0.0, np.sin(theta)]])


@pytest.mark.parametrize("theta", [0.0, 1e-9, 1e-4, 0.3, np.pi / 3, np.pi / 2])
def test_principal_angles_of_known_planes(theta):
    angles = pca.principal_angles(_plane(0.0), _plane(theta))
    # float64 sine/cosine mix: ~1e-15 absolute accuracy at every angle.
    np.testing.assert_allclose(angles, [0.0, theta], atol=1e-12)


def test_principal_angles_ignore_basis_and_scale():
    rng = np.random.default_rng(0)
    basis = rng.normal(size=(6, 3))
    mixed = basis @ rng.normal(size=(3, 3)) * 7.0
    np.testing.assert_allclose(pca.principal_angles(basis, mixed), 0.0, atol=1e-7)


def test_principal_angles_errors():
    with pytest.raises(ValueError, match="same number of rows"):
        pca.principal_angles(np.eye(3)[:, :2], np.eye(4)[:, :2])
    with pytest.raises(ValueError, match="full column rank"):
        pca.principal_angles(np.ones((3, 2)), np.eye(3)[:, :2])


def test_principal_components_and_optimal_mse():
    rng = np.random.default_rng(1)
    scales = np.array([3.0, 2.0, 0.5, 0.1])
    x = rng.normal(size=(5000, 4)) * scales + 10.0  # the offset must not matter
    components = pca.principal_components(x, 2)
    np.testing.assert_allclose(components.T @ components, np.eye(2), atol=1e-12)
    # Axis-aligned variances, so the top-2 subspace is e1, e2 up to sampling noise (~1/sqrt(n)).
    assert pca.principal_angles(components, np.eye(4)[:, :2]).max() < 0.05
    # Eckart–Young equals the residual of the explicit projection.
    centred = x - x.mean(axis=0)
    residual = centred - centred @ components @ components.T
    np.testing.assert_allclose(pca.pca_reconstruction_mse(x, 2), np.mean(residual**2), rtol=1e-10)
    with pytest.raises(ValueError, match="k must be in"):
        pca.principal_components(x, 5)
