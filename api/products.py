"""The catalog, life stages and the model being served."""

from flask import Blueprint

from .params import lang_param
from .state import current_service

bp = Blueprint("products", __name__)


@bp.get("/products")
def list_products():
    return {"products": current_service().products(lang_param())}


@bp.get("/life-stages")
def list_life_stages():
    return {"life_stages": current_service().life_stages(lang_param())}


@bp.get("/model")
def model_info():
    return current_service().model_info()
