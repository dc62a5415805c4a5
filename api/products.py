"""The catalog, life stages and the model being served."""

from flask import Blueprint

from .requests import LangQuery
from .state import current_service
from .validation import query

bp = Blueprint("products", __name__)


@bp.get("/products")
def list_products():
    return {"products": current_service().products(query(LangQuery).lang)}


@bp.get("/life-stages")
def list_life_stages():
    return {"life_stages": current_service().life_stages(query(LangQuery).lang)}


@bp.get("/model")
def model_info():
    return current_service().model_info()
