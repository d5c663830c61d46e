"""The script ``agentmeter dashboard`` hands to ``streamlit run``; the app itself is a normal module."""

from agentmeter.dashboard.app import main

main()
