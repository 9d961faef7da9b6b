"""tmr.backend"""
