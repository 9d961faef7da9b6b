"""tmr.server"""
