"""The catalog, life stages and the model being served."""

from flask import Blueprint, current_app

from .params import lang_param

bp = Blueprint("products", __name__)


@bp.get("/products")
def list_products():
    return {"products": current_app.extensions["nbo"].products(lang_param())}


@bp.get("/life-stages")
def list_life_stages():
    return {"life_stages": current_app.extensions["nbo"].life_stages(lang_param())}


@bp.get("/model")
def model_info():
    return current_app.extensions["nbo"].model_info()
