"""The reference's tensor-transform module (SPEC section 6.8): compatibility names, defined in
:mod:`only_train_once.compat`."""

from ..compat import (SPREAD_TRANSFORM_MAP, TensorTransform, index_transformation, index_transformation_param_group,
                      is_spread_transformation, tensor_transformation, tensor_transformation_param_group)

__all__ = ["SPREAD_TRANSFORM_MAP", "TensorTransform", "index_transformation", "index_transformation_param_group",
           "is_spread_transformation", "tensor_transformation", "tensor_transformation_param_group"]
