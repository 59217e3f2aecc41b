"""placeholder"""
from .hesso import HESSO as HESSOCRIC
