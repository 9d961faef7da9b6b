"""tmr.local"""
