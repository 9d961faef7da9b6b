"""tmr.cli"""
